#include "bin_pool.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace stepwire {
namespace {

constexpr unsigned kMaxThreads = 16;  // the caller plus at most 15 workers

// One parallel_for call. It lives on the caller's stack: the caller unlists it and waits until no worker is
// inside it (active == 0, under the pool's mutex) before it returns, so no worker touches it afterwards.
struct Job {
    const std::function<void(std::size_t)>* task;
    std::size_t n;
    unsigned helpers_wanted;               // workers that may join (threads - 1); guarded by the pool's mutex
    unsigned helpers_joined = 0;           // guarded by the pool's mutex
    unsigned active = 0;                   // workers inside run(); guarded by the pool's mutex
    std::atomic<std::size_t> next{0};      // next task to claim
    std::atomic<bool> failed{false};
    std::mutex error_mutex;
    std::exception_ptr error;              // the first exception a task threw

    bool open() const { return helpers_joined < helpers_wanted && next.load(std::memory_order_relaxed) < n; }

    // Claims and runs tasks until none is left (or one has failed). Never throws.
    void run() noexcept {
        for (;;) {
            if (failed.load(std::memory_order_relaxed)) return;
            const std::size_t t = next.fetch_add(1, std::memory_order_relaxed);
            if (t >= n) return;
            try {
                (*task)(t);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
                failed.store(true, std::memory_order_relaxed);
            }
        }
    }
};

class Pool {
public:
    // Lists the job so that up to job.helpers_wanted workers join it, starting the workers on first use.
    void submit(Job& job) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            start_workers_locked();
            if (workers_ == 0) return;  // no thread could be started: the caller runs everything
            jobs_.push_back(&job);
        }
        if (job.helpers_wanted >= workers_) {
            work_.notify_all();
        } else {
            for (unsigned i = 0; i < job.helpers_wanted; ++i) work_.notify_one();
        }
    }

    // Unlists the job (no worker joins it any more) and waits until the workers inside it have left.
    void retire(Job& job) {
        std::unique_lock<std::mutex> lock(mutex_);
        const auto it = std::find(jobs_.begin(), jobs_.end(), &job);
        if (it != jobs_.end()) jobs_.erase(it);
        left_.wait(lock, [&job] { return job.active == 0; });
    }

    unsigned workers() {
        std::lock_guard<std::mutex> lock(mutex_);
        return workers_;
    }

private:
    void start_workers_locked() {
        if (started_) return;
        started_ = true;
        const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
        const unsigned target = std::min(hw, kMaxThreads) - 1;  // the caller is the other thread of a call
        for (unsigned i = 0; i < target; ++i) {
            try {
                std::thread(&Pool::worker, this).detach();
                ++workers_;
            } catch (const std::system_error&) {
                break;  // fewer workers (or none): calls still complete, the callers do more of the work
            }
        }
    }

    void worker() {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            Job* job = nullptr;
            work_.wait(lock, [&] {
                for (Job* j : jobs_) {
                    if (j->open()) {
                        job = j;
                        return true;
                    }
                }
                return false;
            });
            ++job->helpers_joined;
            ++job->active;
            lock.unlock();
            job->run();
            lock.lock();
            if (--job->active == 0) left_.notify_all();
            // `job` may be gone as soon as the mutex is released: it is not touched again.
        }
    }

    std::mutex mutex_;
    std::condition_variable work_;   // a job was listed
    std::condition_variable left_;   // a worker left a job
    std::vector<Job*> jobs_;         // listed jobs, oldest first
    bool started_ = false;
    unsigned workers_ = 0;
};

// The pool of this process. It is created with `new` and never deleted, on purpose: its workers are detached
// and sleep on its condition variable until the process ends, so nothing may destroy it while they exist.
// Joining them from a static destructor at exit could wait on a worker that is inside a call made from a
// Python thread the interpreter is tearing down (with the GIL released), and would race with other static
// destructors; a leaked pool costs a few hundred bytes and lets exit() finish at once.
std::atomic<Pool*> g_pool{nullptr};
std::once_flag g_atfork_once;

// After fork() the child holds a copy of the parent's pool whose workers do not exist in it (and whose mutex
// may have been held by one of them at the time of the fork): forget it (leaked, never used again) so that
// the child's first parallel call starts a fresh pool. Only an atomic store: async-signal-safe.
void forget_pool_in_child() { g_pool.store(nullptr, std::memory_order_relaxed); }

Pool& pool() {
    Pool* p = g_pool.load(std::memory_order_acquire);
    if (p != nullptr) return *p;
    std::call_once(g_atfork_once, [] { pthread_atfork(nullptr, nullptr, &forget_pool_in_child); });
    auto* fresh = new Pool();
    if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread installed one first (fresh has no workers yet)
    return *p;
}

}  // namespace

void parallel_for(std::size_t n, unsigned threads, const std::function<void(std::size_t)>& task) {
    Job job;
    job.task = &task;
    job.n = n;
    const std::size_t helpers = std::min<std::size_t>({threads == 0 ? 0 : threads - 1, kMaxThreads - 1,
                                                       n == 0 ? 0 : n - 1});
    job.helpers_wanted = static_cast<unsigned>(helpers);
    Pool* p = nullptr;
    if (job.helpers_wanted > 0) {
        p = &pool();
        p->submit(job);
    }
    job.run();
    if (p != nullptr) p->retire(job);
    if (job.error) std::rethrow_exception(job.error);
}

unsigned pool_workers() {
    Pool* p = g_pool.load(std::memory_order_acquire);
    return p == nullptr ? 0 : p->workers();
}

}  // namespace stepwire
