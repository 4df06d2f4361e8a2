#include "sparsebudget/thread_pool.hpp"

#include <chrono>
#include <new>
#include <string>
#include <system_error>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace sparsebudget {
namespace {

inline void CpuRelax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Spins until pred() or about 50 microseconds have passed; returns pred().
template <typename Pred>
bool SpinFor(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
  for (int i = 0;; ++i) {
    if (pred()) return true;
    CpuRelax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return pred();
  }
}

}  // namespace

ThreadPool::ThreadPool(Deferred, int num_threads) noexcept : num_threads_(num_threads) {}

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(num_threads < 1 ? 1 : (num_threads > kMaxThreads ? kMaxThreads : num_threads)) {
  const Status st = StartWorkers();
  if (!st.ok()) throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), st.message());
}

Expected<std::unique_ptr<ThreadPool>> ThreadPool::Create(int num_threads) {
  if (num_threads < 1 || num_threads > kMaxThreads)
    return Status(StatusCode::kInvalidArgument, "num_threads must be in [1, " + std::to_string(kMaxThreads) +
                                                    "], got " + std::to_string(num_threads));
  std::unique_ptr<ThreadPool> pool(new (std::nothrow) ThreadPool(Deferred{}, num_threads));
  if (pool == nullptr) return Status(StatusCode::kInternal, "thread pool: out of memory");
  if (Status st = pool->StartWorkers(); !st.ok()) return st;
  return pool;
}

// Every failure (bad_alloc of the vector, system_error of a thread) is caught here: a pool that
// could not start all its threads stops and joins those it started, so neither the destructor of
// a joinable std::thread (std::terminate) nor a worker left waiting can follow.
Status ThreadPool::StartWorkers() noexcept {
  const int want = num_threads_ - 1;
  try {
    workers_.reserve(static_cast<size_t>(want));
    for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { Worker(i); });
    return OkStatus();
  } catch (const std::exception& e) {
    const size_t started = workers_.size();
    StopWorkers();
    workers_.clear();
    num_threads_ = 1;
    std::string msg = "thread pool: could not start worker " + std::to_string(started + 1) + " of " +
                      std::to_string(want) + " (" + e.what() + "); the " + std::to_string(started) +
                      " started were joined";
    return Status(StatusCode::kInternal, std::move(msg));
  }
}

void ThreadPool::StopWorkers() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true, std::memory_order_release);
  }
  start_cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

ThreadPool::~ThreadPool() { StopWorkers(); }

void ThreadPool::Run(void (*fn)(void*, int, int), void* ctx) {
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  if (num_threads_ == 1) {
    fn(ctx, 0, 1);
    return;
  }
  {
    // fn_/ctx_ are published by the release increment; the mutex orders it against sleepers.
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = fn;
    ctx_ = ctx;
    pending_.store(num_threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_cv_.notify_all();
  fn(ctx, 0, num_threads_);
  auto done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!SpinFor(done)) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, done);
  }
}

void ThreadPool::Worker(int ith) {
  unsigned long seen = 0;
  for (;;) {
    auto ready = [&] {
      return generation_.load(std::memory_order_acquire) != seen || stop_.load(std::memory_order_acquire);
    };
    if (!SpinFor(ready)) {
      std::unique_lock<std::mutex> lock(mutex_);
      start_cv_.wait(lock, ready);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = generation_.load(std::memory_order_acquire);
    void (*fn)(void*, int, int);
    void* ctx;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn = fn_;
      ctx = ctx_;
    }
    fn(ctx, ith, num_threads_);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_cv_.notify_one();
    }
  }
}

}  // namespace sparsebudget
