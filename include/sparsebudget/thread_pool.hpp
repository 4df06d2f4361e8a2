/// @file
/// sparsebudget/thread_pool.hpp - a small persistent pool for the convenience (threaded) paths.
///
/// The kernels never create threads. An engine with its own pool calls the partitioned entry
/// points (ith, nth) directly; everyone else may create one ThreadPool and pass it to the calls.
/// Threads are created in the constructor and joined in the destructor, never in between.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "sparsebudget/status.hpp"

namespace sparsebudget {

/// A fixed set of persistent workers plus the calling thread, used as a fork-join barrier by Run.
/// Any thread may call Run; calls on one pool are serialised. Calling Run from inside a task of
/// the same pool deadlocks.
class ThreadPool {
 public:
  /// Most threads a pool may have (the caller included): far more than any CPU this runs on, and
  /// a bound on what a bad argument can make the OS try to start.
  static constexpr int kMaxThreads = 4096;

  /// Starts num_threads - 1 workers (num_threads counts the calling thread). Errors:
  /// kInvalidArgument for num_threads outside [1, kMaxThreads]; kInternal, naming how many
  /// started, when the OS cannot start a thread (memory or thread limits) - the workers already
  /// started are then stopped and joined before it returns. Cost: one allocation and the threads.
  static Expected<std::unique_ptr<ThreadPool>> Create(int num_threads);

  /// The same as Create for callers that use exceptions: values below 1 are treated as 1, above
  /// kMaxThreads as kMaxThreads; if a thread cannot be started, the workers already started are
  /// joined and std::system_error is thrown (prefer Create, which reports a status).
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  /// Threads taking part in each Run, the caller included (>= 1).
  int size() const noexcept { return num_threads_; }

  /// Runs fn(ctx, ith, size()) for every ith, the caller taking ith = 0, and returns when all are
  /// done (a full barrier). One Run at a time per pool: concurrent Runs are serialised.
  void Run(void (*fn)(void* ctx, int ith, int nth), void* ctx);
  /// Runs f(ith, nth) on every thread like Run(fn, ctx); `f` is called concurrently from
  /// size() threads and must be safe for that.
  template <typename F>
  void Run(F&& f) {
    Run([](void* c, int ith, int nth) { (*static_cast<std::remove_reference_t<F>*>(c))(ith, nth); },
        static_cast<void*>(&f));
  }

 private:
  struct Deferred {};
  ThreadPool(Deferred, int num_threads) noexcept;
  Status StartWorkers() noexcept;  // starts num_threads_ - 1 workers, or none (joined) on failure
  void StopWorkers() noexcept;
  void Worker(int ith);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // serialises Run
  std::mutex mutex_;      // guards the sleeping side of the hand-offs below
  std::condition_variable start_cv_, done_cv_;
  void (*fn_)(void*, int, int) = nullptr;
  void* ctx_ = nullptr;
  // Hand-offs spin briefly before sleeping: a decode step's work is often tens of microseconds,
  // less than a condition-variable wake-up.
  std::atomic<unsigned long> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace sparsebudget
