#include "memory.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <vector>

namespace cuda_emulator {
namespace {

struct Allocation {
  char* mapping = nullptr;  // page-aligned start of the pages
  size_t mapped = 0;        // bytes of pages, the trailing guard page included
  size_t bytes = 0;         // what was asked for
  char* data() const { return mapping + mapped - page_size() - padded(bytes); }
  static size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }
  static size_t padded(size_t n) { return (n + 255) / 256 * 256; }
};

struct State {
  std::recursive_mutex mutex;
  std::map<uintptr_t, Allocation> allocations;   // by data() address
  std::map<uintptr_t, size_t> registered;        // host ranges by start
  size_t allocated = 0;
  int access_depth = 0;
  pthread_t owner{};                     // the thread inside DeviceAccess
  std::vector<const Allocation*> opened; // made accessible since; capacity >= allocations

  cudaError_t sticky = cudaSuccess;
};

State& state() {
  static State* instance = new State;  // never destroyed: buffers may outlive static destructors
  return *instance;
}

thread_local cudaError_t last_error = cudaSuccess;

void protect(const Allocation& a, int protection) {
  if (mprotect(a.mapping, a.mapped - Allocation::page_size(), protection) != 0) {
    std::perror("cuda emulator: mprotect");
    std::abort();
  }
}

const Allocation* find(const std::map<uintptr_t, Allocation>& allocations, uintptr_t address) {
  auto it = allocations.upper_bound(address);
  if (it == allocations.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  const auto start = reinterpret_cast<uintptr_t>(a.mapping);
  return address >= start && address < start + a.mapped ? &a : nullptr;
}

void write_message(const char* what, uintptr_t address, const Allocation& a) {
  char message[320];
  const auto data = reinterpret_cast<uintptr_t>(a.data());
  const int n = std::snprintf(message, sizeof(message),
                              "cuda emulator: %s %#lx, %ld bytes from the start of a %zu-byte "
                              "device allocation at %#lx\n",
                              what, static_cast<unsigned long>(address),
                              static_cast<long>(address - data), a.bytes,
                              static_cast<unsigned long>(data));
  if (n > 0) (void)!write(STDERR_FILENO, message, static_cast<size_t>(n));
}

// Device memory is opened on first touch: inside DeviceAccess, on its thread, a fault on an
// allocation's pages makes that allocation accessible and the access is retried; any other
// fault there is reported and ends the process.
void on_fault(int signal, siginfo_t* info, void*) {
  State& s = state();
  const auto address = reinterpret_cast<uintptr_t>(info->si_addr);
  if (const Allocation* a = find(s.allocations, address)) {
    const auto guard = reinterpret_cast<uintptr_t>(a->mapping) + a->mapped - Allocation::page_size();
    const bool emulated = s.access_depth > 0 && pthread_equal(s.owner, pthread_self());
    if (emulated && address < guard) {
      if (mprotect(a->mapping, a->mapped - Allocation::page_size(), PROT_READ | PROT_WRITE) == 0) {
        s.opened.push_back(a);  // no reallocation: capacity covers every allocation
        return;
      }
    }
    write_message(!emulated        ? "host code accessed device memory at"
                  : address >= guard ? "an emulated kernel or copy went past the end of an allocation at"
                                     : "an emulated kernel or copy could not open",
                  address, *a);
  }
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  sigaction(signal, &fallback, nullptr);  // the faulting access repeats and ends the process
}

void install_fault_handler() {
  static const bool installed = [] {
    struct sigaction action {};
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, nullptr);
    return true;
  }();
  (void)installed;
}

}  // namespace

std::recursive_mutex& device_mutex() { return state().mutex; }

size_t total_bytes() {
  static const size_t bytes = [] {
    const char* text = std::getenv("MOENAV_EMULATED_GPU_BYTES");
    return text ? static_cast<size_t>(std::strtoull(text, nullptr, 10)) : size_t{16} << 30;
  }();
  return bytes;
}

size_t allocated_bytes() {
  std::lock_guard lock(device_mutex());
  return state().allocated;
}

cudaError_t allocate(void** data, size_t bytes) {
  std::lock_guard lock(device_mutex());
  install_fault_handler();
  State& s = state();
  if (bytes == 0) {
    *data = nullptr;
    return cudaSuccess;
  }
  if (s.allocated + bytes > total_bytes()) return cudaErrorMemoryAllocation;
  const size_t page = Allocation::page_size();
  Allocation a;
  a.bytes = bytes;
  a.mapped = (Allocation::padded(bytes) + page - 1) / page * page + page;
  void* mapping = mmap(nullptr, a.mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
  if (mapping == MAP_FAILED) return cudaErrorMemoryAllocation;
  a.mapping = static_cast<char*>(mapping);
  protect(a, PROT_READ | PROT_WRITE);
  std::memset(a.data(), 0xff, bytes);
  protect(a, PROT_NONE);
  s.allocations.emplace(reinterpret_cast<uintptr_t>(a.data()), a);
  s.opened.reserve(s.allocations.size());
  s.allocated += bytes;
  *data = a.data();
  return cudaSuccess;
}

cudaError_t release(void* data) {
  std::lock_guard lock(device_mutex());
  if (!data) return cudaSuccess;
  State& s = state();
  auto it = s.allocations.find(reinterpret_cast<uintptr_t>(data));
  if (it == s.allocations.end()) {
    report(cudaErrorInvalidValue, "cudaFree(%p): not the start of a device allocation", data);
    return cudaErrorInvalidValue;
  }
  s.allocated -= it->second.bytes;
  munmap(it->second.mapping, it->second.mapped);
  s.allocations.erase(it);
  return cudaSuccess;
}

namespace {
// Whether [data, data + bytes) lies in one range of `ranges` (keyed by start), whose length
// size_of(value) gives.
template <typename Ranges, typename Size>
bool within_one(const Ranges& ranges, const void* data, size_t bytes, Size size_of) {
  const auto address = reinterpret_cast<uintptr_t>(data);
  auto it = ranges.upper_bound(address);
  if (it == ranges.begin()) return false;
  --it;
  return address >= it->first && address + bytes <= it->first + size_of(it->second);
}
}  // namespace

bool in_device_memory(const void* data, size_t bytes) {
  std::lock_guard lock(device_mutex());
  return within_one(state().allocations, data, bytes, [](const Allocation& a) { return a.bytes; });
}

bool in_registered_host_memory(const void* data, size_t bytes) {
  std::lock_guard lock(device_mutex());
  return within_one(state().registered, data, bytes, [](size_t length) { return length; });
}

cudaError_t register_host(void* data, size_t bytes) {
  std::lock_guard lock(device_mutex());
  auto& registered = state().registered;
  const auto start = reinterpret_cast<uintptr_t>(data);
  auto next = registered.lower_bound(start);
  const bool overlaps_next = next != registered.end() && next->first < start + bytes;
  const bool overlaps_previous =
      next != registered.begin() && std::prev(next)->first + std::prev(next)->second > start;
  if (!data || bytes == 0) return cudaErrorInvalidValue;
  if (overlaps_next || overlaps_previous) return cudaErrorHostMemoryAlreadyRegistered;
  registered.emplace(start, bytes);
  return cudaSuccess;
}

cudaError_t unregister_host(void* data) {
  std::lock_guard lock(device_mutex());
  return state().registered.erase(reinterpret_cast<uintptr_t>(data)) == 1
             ? cudaSuccess
             : cudaErrorHostMemoryNotRegistered;
}

DeviceAccess::DeviceAccess() {
  device_mutex().lock();
  if (state().access_depth++ == 0) state().owner = pthread_self();
}

DeviceAccess::~DeviceAccess() {
  State& s = state();
  if (--s.access_depth == 0) {
    for (const Allocation* a : s.opened) protect(*a, PROT_NONE);
    s.opened.clear();
  }
  device_mutex().unlock();
}

namespace {
void record(bool sticky, cudaError_t error, const char* format, va_list args) {
  std::lock_guard lock(device_mutex());
  std::fputs("cuda emulator: ", stderr);
  std::vfprintf(stderr, format, args);
  std::fputc('\n', stderr);
  last_error = error;
  if (sticky && state().sticky == cudaSuccess) state().sticky = error;
}
}  // namespace

void report(cudaError_t error, const char* format, ...) {
  va_list args;
  va_start(args, format);
  record(false, error, format, args);
  va_end(args);
}

void fault(cudaError_t error, const char* format, ...) {
  va_list args;
  va_start(args, format);
  record(true, error, format, args);
  va_end(args);
}

cudaError_t sticky_error() {
  std::lock_guard lock(device_mutex());
  return state().sticky;
}

void set_last_error(cudaError_t error) { last_error = error; }

cudaError_t take_last_error() {
  const cudaError_t error = last_error;
  last_error = cudaSuccess;
  return error;
}

}  // namespace cuda_emulator
