// A small pool of large buffers for kernel outputs and workspaces.
//
// A training loop asks for the same few large arrays call after call; the pool hands the memory of
// a freed array to the next request of about the same size instead of faulting fresh zeroed pages
// in (milliseconds per call once T*N*H is in the millions). Only used with the GIL held (buffers
// are taken while building outputs, and given back when a NumPy array's capsule dies).
// RNNKIT_POOL_MB caps what the pool keeps (default 1024; 0 disables it).
#pragma once

#include <cstdlib>
#include <map>
#include <new>

namespace rnnkit {

class BufferPool {
 public:
  static BufferPool& instance() {
    static BufferPool* pool = new BufferPool();  // never destroyed: arrays may outlive exit
    return *pool;
  }
  // Smaller buffers are plain NumPy arrays. glibc serves blocks from 128 KiB up by mmap or from
  // the top of its heap, and gives them back to the system when freed (munmap / heap trimming):
  // measured at LSTM (50, 32, 128, 128), a freed 835 KB state array cost 0.47 ms to unmap and
  // the next call 1.5 ms more forward and 1.4 ms more backward in page faults, so everything of
  // 128 KiB or more goes through the pool.
  static constexpr size_t kMinBytes = size_t(128) << 10;

  // A 64-byte aligned buffer of at least `bytes`: a cached one of at most 1.5x the size, else new.
  void* take(size_t bytes) {
    auto it = free_.lower_bound(bytes);
    if (it != free_.end() && it->first <= bytes + bytes / 2) {
      void* p = it->second;
      cached_ -= it->first;
      sizes_[p] = it->first;
      free_.erase(it);
      return p;
    }
    const size_t rounded = (bytes + 4095) / 4096 * 4096;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    sizes_[p] = rounded;
    return p;
  }
  // Returns a buffer from take(): kept while the pool holds less than its cap, else freed.
  void give(void* p) {
    const size_t size = sizes_[p];
    sizes_.erase(p);
    if (cached_ + size > limit_) {
      std::free(p);
      return;
    }
    free_.emplace(size, p);
    cached_ += size;
  }

 private:
  BufferPool() {
    if (const char* mb = std::getenv("RNNKIT_POOL_MB")) limit_ = size_t(std::atoll(mb)) << 20;
  }
  std::multimap<size_t, void*> free_;
  std::map<void*, size_t> sizes_;
  size_t cached_ = 0;
  size_t limit_ = size_t(1024) << 20;
};

}  // namespace rnnkit
