// The disk tier: reading one expert's matrices from the model file into a slot, and the
// asynchronous I/O workers that do it off the compute thread.
//
// With O_DIRECT (placement.disk.io = "direct") the page cache cannot hide the cost of a miss, so
// what a benchmark measures is the disk. O_DIRECT needs block-aligned offsets, lengths and
// buffers, and safetensors/GGUF tensor offsets are not 4096-aligned, so each read covers the
// enclosing aligned range and the expert's views point at the right offset inside the slot.
// Bytes are copied as stored (bf16, Q4_K, ...), so computing from a slot is bit-identical to
// computing from the mapping. Matrices the loader built in memory (derived tensors) are copied
// from memory; bias vectors (f32, small) stay where they are.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/host_buffer.h"
#include "model/model_weights.h"
#include "moenav/status.h"

namespace moenav {

struct Model;

constexpr int64_t kIoAlignment = 4096;

enum class DiskIo : uint8_t { Direct, Buffered, Mmap };
Expected<DiskIo> parse_disk_io(std::string_view name);

class ExpertReader {
 public:
  // Plans every routed expert's reads and opens the files (O_DIRECT when asked; a file system
  // that refuses O_DIRECT falls back to buffered reads, reported by direct()).
  static Expected<std::unique_ptr<ExpertReader>> create(const Model& model, DiskIo io);
  ~ExpertReader();

  int64_t slot_bytes() const { return slot_bytes_; }      // the largest expert's aligned reads
  int64_t payload_bytes(int64_t layer, int32_t expert) const;
  bool direct() const { return direct_; }
  DiskIo io() const { return io_; }
  // Reads the expert into `slot` (kIoAlignment-aligned, slot_bytes() long); returns bytes read.
  Expected<int64_t> read(int64_t layer, int32_t expert, uint8_t* slot) const;
  // The expert's weights inside a slot that read() filled.
  FfnWeights weights_in(int64_t layer, int32_t expert, const uint8_t* slot) const;

 private:
  struct Read {
    int file = -1;                     // index into files_; -1: copy from `source`
    const uint8_t* source = nullptr;   // memory source
    int64_t offset = 0;                // aligned file offset
    int64_t bytes = 0;                 // aligned length (exact for memory copies)
    int64_t slot_offset = 0;           // where it lands in the slot
  };
  struct Layout {
    std::vector<Read> reads;
    int64_t matrix_offset[3] = {0, 0, 0};  // gate, up, down: offset of the data in the slot
    int64_t payload = 0;
    int64_t span = 0;                      // slot bytes the reads cover
  };
  struct File {
    std::string path;
    const uint8_t* base = nullptr;
    size_t size = 0;
    int fd = -1;
  };
  ExpertReader(const Model& model, DiskIo io) : model_(model), io_(io) {}
  Status plan(int64_t layer, int32_t expert, Layout& layout);
  const Layout& layout(int64_t layer, int32_t expert) const;

  const Model& model_;
  DiskIo io_;
  bool direct_ = false;
  std::vector<File> files_;
  std::vector<Layout> layouts_;  // [n_layers * n_experts]
  int64_t slot_bytes_ = 0;
};

// Asynchronous I/O workers. Jobs run in submission order, urgent (demand) jobs before prefetch
// jobs; a worker starts a job only while the bytes being read stay within max_bytes_in_flight
// (a job larger than the bound runs alone). With no workers, submit() runs the job inline.
class IoQueue {
 public:
  IoQueue(int threads, int64_t max_bytes_in_flight);
  ~IoQueue();
  void submit(int64_t bytes, bool urgent, std::function<void()> job);
  double busy_seconds() const;
  int64_t max_bytes_in_flight_seen() const { return max_seen_.load(); }
  void reset_statistics();
  int threads() const { return static_cast<int>(workers_.size()); }

 private:
  struct Job {
    int64_t bytes;
    std::function<void()> run;
  };
  void worker_loop();
  bool startable(const Job& job) const;

  int64_t max_in_flight_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> urgent_, background_;
  int64_t in_flight_ = 0;
  bool stopping_ = false;
  std::atomic<int64_t> max_seen_{0};
  std::atomic<int64_t> busy_nanoseconds_{0};
  std::vector<std::thread> workers_;
};

}  // namespace moenav
