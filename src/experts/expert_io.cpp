#include "experts/expert_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "core/check.h"
#include "model/model.h"

namespace moenav {
namespace {

// Matrices of one expert closer than this in a file are read with one request.
constexpr int64_t kMergeGap = 16 * 1024;

int64_t align_down(int64_t value) { return value / kIoAlignment * kIoAlignment; }
int64_t align_up(int64_t value) { return (value + kIoAlignment - 1) / kIoAlignment * kIoAlignment; }

const TensorView& matrix(const FfnWeights& weights, int index) {
  return index == 0 ? weights.gate : index == 1 ? weights.up : weights.down;
}

}  // namespace

Expected<DiskIo> parse_disk_io(std::string_view name) {
  if (name == "direct") return DiskIo::Direct;
  if (name == "buffered") return DiskIo::Buffered;
  if (name == "mmap") return DiskIo::Mmap;
  return Status::errorf("placement.disk.io '{}' is unknown (choose one of: direct, buffered, mmap)", name);
}

ExpertReader::~ExpertReader() {
  for (File& file : files_) if (file.fd >= 0) ::close(file.fd);
}

Expected<std::unique_ptr<ExpertReader>> ExpertReader::create(const Model& model, DiskIo io) {
  std::unique_ptr<ExpertReader> reader(new ExpertReader(model, io));
  reader->direct_ = io == DiskIo::Direct;
  for (const auto& mapped : model.tensors.files()) {
    File file{mapped->path(), mapped->data(), mapped->size(), -1};
    if (io != DiskIo::Mmap) {
      const int flags = O_RDONLY | O_CLOEXEC | (reader->direct_ ? O_DIRECT : 0);
      file.fd = ::open(file.path.c_str(), flags);
      if (file.fd < 0 && reader->direct_ && errno == EINVAL) {  // no O_DIRECT on this file system
        reader->direct_ = false;
        file.fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
      }
      if (file.fd < 0) return Status::errorf("{}: cannot open for the disk tier: {}", file.path, std::strerror(errno));
    }
    reader->files_.push_back(file);
  }
  const ModelConfig& c = model.config;
  reader->layouts_.resize(static_cast<size_t>(c.n_layers * c.n_experts));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    for (int32_t e = 0; e < c.n_experts; ++e) {
      Layout& layout = reader->layouts_[static_cast<size_t>(l * c.n_experts + e)];
      MOENAV_RETURN_IF_ERROR(reader->plan(l, e, layout));
      reader->slot_bytes_ = std::max(reader->slot_bytes_, layout.span);
    }
  }
  // Some file systems accept O_DIRECT at open and refuse the reads: probe once.
  if (reader->direct_ && !reader->files_.empty()) {
    HostBuffer probe(kIoAlignment);
    if (::pread(reader->files_[0].fd, probe.data(), kIoAlignment, 0) < 0 && errno == EINVAL) {
      reader->direct_ = false;
      for (File& file : reader->files_) {
        ::close(file.fd);
        file.fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
      }
    }
  }
  return reader;
}

Status ExpertReader::plan(int64_t layer, int32_t expert, Layout& layout) {
  const FfnWeights& weights = model_.weights.layers[static_cast<size_t>(layer)].experts[static_cast<size_t>(expert)];
  struct Extent { int matrix; int file; int64_t offset; int64_t bytes; };
  std::vector<Extent> in_files;
  int64_t slot_offset = 0;
  for (int m = 0; m < 3; ++m) {
    const TensorView& view = matrix(weights, m);
    const auto* data = static_cast<const uint8_t*>(view.data);
    layout.payload += view.bytes();
    int file = -1;
    for (size_t f = 0; f < files_.size(); ++f) {
      if (data >= files_[f].base && data + view.bytes() <= files_[f].base + files_[f].size) file = static_cast<int>(f);
    }
    if (file >= 0) {
      in_files.push_back({m, file, static_cast<int64_t>(data - files_[static_cast<size_t>(file)].base), view.bytes()});
      continue;
    }
    // Built in memory by the loader: copied from there.
    layout.reads.push_back({-1, data, 0, view.bytes(), slot_offset});
    layout.matrix_offset[m] = slot_offset;
    slot_offset += align_up(view.bytes());
  }
  std::sort(in_files.begin(), in_files.end(), [](const Extent& a, const Extent& b) {
    return a.file != b.file ? a.file < b.file : a.offset < b.offset;
  });
  for (size_t i = 0; i < in_files.size();) {
    size_t j = i + 1;
    int64_t end = in_files[i].offset + in_files[i].bytes;
    while (j < in_files.size() && in_files[j].file == in_files[i].file && in_files[j].offset <= end + kMergeGap) {
      end = std::max(end, in_files[j].offset + in_files[j].bytes);
      ++j;
    }
    const File& file = files_[static_cast<size_t>(in_files[i].file)];
    const int64_t start = align_down(in_files[i].offset);
    const int64_t length = std::min(align_up(end), static_cast<int64_t>(align_up(static_cast<int64_t>(file.size)))) - start;
    Read read{in_files[i].file, nullptr, start, length, slot_offset};
    if (io_ == DiskIo::Mmap) {  // a memory copy of the same range, clamped to the file
      read.file = -1;
      read.source = file.base + start;
      read.bytes = std::min(length, static_cast<int64_t>(file.size) - start);
    }
    layout.reads.push_back(read);
    for (size_t m = i; m < j; ++m) layout.matrix_offset[in_files[m].matrix] = slot_offset + in_files[m].offset - start;
    slot_offset += align_up(length);
    i = j;
  }
  layout.span = slot_offset;
  return ok_status();
}

const ExpertReader::Layout& ExpertReader::layout(int64_t layer, int32_t expert) const {
  return layouts_[static_cast<size_t>(layer * model_.config.n_experts + expert)];
}

int64_t ExpertReader::payload_bytes(int64_t layer, int32_t expert) const {
  return layout(layer, expert).payload;
}

Expected<int64_t> ExpertReader::read(int64_t layer, int32_t expert, uint8_t* slot) const {
  int64_t total = 0;
  for (const Read& read : layout(layer, expert).reads) {
    uint8_t* destination = slot + read.slot_offset;
    if (read.file < 0) {
      std::memcpy(destination, read.source, static_cast<size_t>(read.bytes));
      total += read.bytes;
      continue;
    }
    const File& file = files_[static_cast<size_t>(read.file)];
    int64_t done = 0;
    while (done < read.bytes) {
      const ssize_t got = ::pread(file.fd, destination + done, static_cast<size_t>(read.bytes - done),
                                  static_cast<off_t>(read.offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        return Status::errorf("{}: reading expert {} of layer {} ({} bytes at offset {}): {}", file.path,
                              expert, layer, read.bytes, read.offset, std::strerror(errno));
      }
      if (got == 0) break;  // end of file inside the aligned tail
      done += got;
    }
    if (read.offset + done < std::min<int64_t>(read.offset + read.bytes, static_cast<int64_t>(file.size))) {
      return Status::errorf("{}: short read of expert {} of layer {}: {} of {} bytes at offset {}",
                            file.path, expert, layer, done, read.bytes, read.offset);
    }
    total += done;
  }
  return total;
}

FfnWeights ExpertReader::weights_in(int64_t layer, int32_t expert, const uint8_t* slot) const {
  FfnWeights weights = model_.weights.layers[static_cast<size_t>(layer)].experts[static_cast<size_t>(expert)];
  const Layout& where = layout(layer, expert);
  weights.gate.data = slot + where.matrix_offset[0];
  weights.up.data = slot + where.matrix_offset[1];
  weights.down.data = slot + where.matrix_offset[2];
  return weights;  // biases stay where the loader put them
}

IoQueue::IoQueue(int threads, int64_t max_bytes_in_flight) : max_in_flight_(max_bytes_in_flight) {
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

IoQueue::~IoQueue() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

bool IoQueue::startable(const Job& job) const {
  return in_flight_ == 0 || max_in_flight_ <= 0 || in_flight_ + job.bytes <= max_in_flight_;
}

void IoQueue::submit(int64_t bytes, bool urgent, std::function<void()> job) {
  if (workers_.empty()) {
    const auto start = std::chrono::steady_clock::now();
    job();
    busy_nanoseconds_ += std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - start).count();
    max_seen_.store(std::max(max_seen_.load(), bytes));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    (urgent ? urgent_ : background_).push_back({bytes, std::move(job)});
  }
  wake_.notify_one();
}

void IoQueue::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    // Stopping drains the queue first; a job that does not fit the in-flight bound waits for a
    // running one to finish (which notifies), never spins holding the lock.
    wake_.wait(lock, [&] {
      const std::deque<Job>& queue = !urgent_.empty() ? urgent_ : background_;
      return (stopping_ && queue.empty()) || (!queue.empty() && startable(queue.front()));
    });
    std::deque<Job>& queue = !urgent_.empty() ? urgent_ : background_;
    if (queue.empty()) return;  // stopping, and nothing left
    Job job = std::move(queue.front());
    queue.pop_front();
    in_flight_ += job.bytes;
    if (in_flight_ > max_seen_.load()) max_seen_.store(in_flight_);
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    job.run();
    busy_nanoseconds_ += std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - start).count();
    lock.lock();
    in_flight_ -= job.bytes;
    wake_.notify_all();
  }
}

double IoQueue::busy_seconds() const { return static_cast<double>(busy_nanoseconds_.load()) * 1e-9; }

void IoQueue::reset_statistics() {
  busy_nanoseconds_ = 0;
  max_seen_ = 0;
}

}  // namespace moenav
