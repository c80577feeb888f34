// A process-wide pool of worker threads for binning (bin_many), shared by every caller in the process.
#pragma once
#include <cstddef>
#include <functional>

namespace stepwire {

// Runs task(0), ..., task(n - 1), each exactly once, on the calling thread and on up to `threads - 1` workers
// of the process-wide pool, and returns when all of them are done. The pool starts on first use (one worker
// fewer than std::thread::hardware_concurrency(), at most 15); threads <= 1, or n <= 1, runs everything on
// the caller and never starts it. The caller works on its own tasks, so a call completes even while every
// worker is busy with another caller's call; any number of callers may use the pool at once.
//
// If tasks throw, the remaining tasks are skipped, and the first exception is rethrown on the calling thread
// once no worker is still running one of this call's tasks: an exception never reaches std::terminate.
//
// After fork() the child starts a fresh pool on its first parallel call (the parent's workers do not exist
// there). Workers are never joined: they sleep until the process exits (see bin_pool.cpp).
void parallel_for(std::size_t n, unsigned threads, const std::function<void(std::size_t)>& task);

// Workers started in this process so far (0 before the first parallel call, and in a child after fork).
unsigned pool_workers();

}  // namespace stepwire
