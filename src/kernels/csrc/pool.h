// Row-parallel loops on a small persistent pool whose threads sleep on a condition variable between
// calls. OpenMP teams spin after a parallel region and compete with MindSpore's own threads for the
// same cores, which slowed a whole train step far more than the kernels gained; these threads cost
// nothing while MindSpore's kernels run. Only tensors of `kMinWork` elements or more are split: in a
// whole train or forward step, on a machine whose cores MindSpore's threads (and other processes)
// already keep busy, waking a second thread for a smaller kernel made the step slower, not faster
// (bench.py --parts cpu_kernels times both choices; docs give the figures).
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <pthread.h>
#include <thread>
#include <vector>

namespace ck {

constexpr int64_t kMinWork = 1 << 20;

class Pool {
  public:
    static Pool &get() {
        static Pool pool;
        return pool;
    }

    int threads() const { return static_cast<int>(workers_.size()) + 1; }

    // The parts a run uses from now on, at most threads() (SetKernelThreads below).
    void set_parts(int parts) { parts_.store(std::max(1, std::min(parts, threads()))); }
    int parts() const { return parts_.load(); }

    // fn(part, begin, end) over [0, rows) cut into threads() parts; the caller runs part 0. Two
    // kernels that MindSpore runs at once do not queue for the pool: the second runs on its own thread.
    void run(int64_t rows, const std::function<void(int, int64_t, int64_t)> &fn) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock() || forked_) {  // a forked child has none of the parent's threads
            fn(0, 0, rows);
            return;
        }
        const int parts = parts_.load();
        if (parts < 2) {
            fn(0, 0, rows);
            return;
        }
        std::unique_lock<std::mutex> lock(mutex_);
        task_ = &fn;
        parts_now_ = parts;
        rows_ = rows;
        pending_ = parts - 1;
        ++generation_;
        lock.unlock();
        wake_.notify_all();
        fn(0, 0, bound(0 + 1, parts, rows));
        lock.lock();
        done_.wait(lock, [this] { return pending_ == 0; });
        task_ = nullptr;
    }

    ~Pool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto &t : workers_) t.join();
    }

  private:
    Pool() {
        pthread_atfork(nullptr, nullptr, [] { forked_ = true; });
        // CONFORMER_KERNEL_THREADS caps the threads (1: every kernel on the calling thread)
        unsigned hw = std::thread::hardware_concurrency();
        long cap = 8;
        if (const char *env = std::getenv("CONFORMER_KERNEL_THREADS")) cap = std::max(1L, std::strtol(env, nullptr, 10));
        int extra = static_cast<int>(std::min<long>(hw == 0 ? 1 : hw, cap)) - 1;
        for (int i = 0; i < extra; ++i) workers_.emplace_back([this, i] { loop(i + 1); });
        parts_.store(extra + 1);
    }

    static int64_t bound(int part, int parts, int64_t rows) { return rows * part / parts; }

    void loop(int part) {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            const auto *task = task_;
            const int parts = parts_now_;
            const int64_t rows = rows_;
            if (part < parts) {  // a run on fewer parts leaves this thread asleep
                lock.unlock();
                (*task)(part, bound(part, parts, rows), bound(part + 1, parts, rows));
                lock.lock();
                if (--pending_ == 0) done_.notify_one();
            }
        }
    }

    static inline bool forked_ = false;
    std::vector<std::thread> workers_;
    std::mutex busy_, mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(int, int64_t, int64_t)> *task_ = nullptr;
    std::atomic<int> parts_{1};
    int parts_now_ = 1;
    int64_t rows_ = 0;
    int pending_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
};

// fn(part, begin, end) over the rows, in parallel when rows * cols is worth it.
template <class Fn>
void parallel_rows(int64_t rows, int64_t cols, Fn &&fn) {
    if (rows * cols < kMinWork || rows < 2 || Pool::get().parts() < 2) {
        fn(0, 0, rows);
        return;
    }
    std::function<void(int, int64_t, int64_t)> task(fn);
    Pool::get().run(rows, task);
}

}  // namespace ck
