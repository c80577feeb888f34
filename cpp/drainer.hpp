// One stream of a run: the per-thread rings its producers write, and the drainer thread that empties
// them into sealed columnar batches for the sender.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "encoder.hpp"
#include "ring.hpp"
#include "segment.hpp"

namespace stepwire {

struct StreamConfig {
    std::size_t ring_capacity = 1 << 16;     // records per producing thread (rounded up to a power of two)
    bool drop_when_full = false;             // false: block the producer (lossless); true: drop and count
    std::size_t batch_bytes = 1 << 20;       // seal once a batch holds this many bytes and the sender is idle,
    double flush_interval_s = 0.1;           // ... or once its oldest item is this old and the sender is idle;
    std::size_t max_batch_bytes = 16u << 20; // while the sender is busy a batch grows up to this size
    std::size_t max_sealed = 32;             // sealed batches waiting for the sender before draining pauses
    std::size_t max_sealed_bytes = 32u << 20;  // sealed batches and the open one, while any sealed one waits
    std::size_t max_pending_histogram_bytes = 16u << 20;  // histograms binned but not yet in a batch
    double block_timeout_s = 60.0;           // block policy: the longest a producer waits before it drops and counts
    bool discard = false;                    // accept and drop everything (a rank that does not log)
    // A shared-memory segment at this path (empty: none) holds the rings of the first shm_slots producing
    // threads, the journal (journal_bytes; 0: max_sealed_bytes + max_batch_bytes) and the series table.
    std::string shm_path;
    unsigned shm_slots = 8;
    std::size_t journal_bytes = 0;
    std::size_t table_bytes = 4u << 20;
    std::size_t queue_bytes = 0;  // histogram queue; 0: max_pending_histogram_bytes + a quarter + 1 MiB
};

// Where the records of a stream outlive its process (segment.hpp), or why they do not.
struct SegmentInfo {
    bool survives_crash = false;
    std::string reason;  // why not, when survives_crash is false
    std::string path;
    std::uint64_t bytes = 0;
    std::uint64_t journal_bytes = 0;
    unsigned slots = 0;
    unsigned unsafe_rings = 0;   // producing threads whose ring is in process memory (every slot was taken)
    std::uint64_t unsafe_series = 0;  // series defined after the table filled up
    std::uint64_t unsafe_histograms = 0;  // histograms too large for the journal
};

struct StreamStats {
    std::uint64_t logged = 0;    // scalar points and histograms accepted
    std::uint64_t dropped = 0;   // refused: a ring or the histogram queue was full (drop policy), or timed_out
    std::uint64_t timed_out = 0; // dropped under the block policy after waiting block_timeout_s for room
    std::uint64_t blocked = 0;   // times a producer had to wait for room (block policy)
    std::uint64_t held_bytes = 0;  // beyond the rings: sealed batches, the open one, queued histograms and names
    std::uint64_t sealed_batches = 0;
    std::uint64_t sealed_items = 0;
};

enum class PushResult { Ok, Full, Closed };

class Stream {
public:
    explicit Stream(StreamConfig cfg);
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;

    // Registers a series and returns its id; the definition travels with the next sealed batch.
    std::uint32_t define(std::string name, SeriesKind kind);

    // Producer fast path: lock-free on this thread's ring.
    PushResult try_push(const Record& r) noexcept {
        if (closed_for_producers_.load(std::memory_order_relaxed)) [[unlikely]] return PushResult::Closed;
        if (cfg_.discard) [[unlikely]] return PushResult::Ok;
        Ring* ring = ring_for_this_thread();
        if (ring->try_push(r)) {
            ring->logged.store(ring->logged.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
            if (drainer_asleep_.load(std::memory_order_relaxed)) [[unlikely]] wake_if_filling(ring);
            return PushResult::Ok;
        }
        return PushResult::Full;
    }
    // Producer fast path for many records: returns how many were pushed (all of them unless the ring filled).
    std::size_t try_push_many(const Record* r, std::size_t n) noexcept {
        if (closed_for_producers_.load(std::memory_order_relaxed)) [[unlikely]] return 0;
        if (cfg_.discard) [[unlikely]] return n;
        Ring* ring = ring_for_this_thread();
        const std::size_t pushed = ring->try_push_many(r, n);
        ring->logged.store(ring->logged.load(std::memory_order_relaxed) + pushed, std::memory_order_relaxed);
        if (drainer_asleep_.load(std::memory_order_relaxed)) [[unlikely]] wake_if_filling(ring);
        return pushed;
    }
    // Producer fast path for a call's records that must be seen whole or not at all (one release store).
    PushResult try_push_all(const Record* r, std::size_t n) noexcept {
        if (closed_for_producers_.load(std::memory_order_relaxed)) [[unlikely]] return PushResult::Closed;
        if (cfg_.discard) [[unlikely]] return PushResult::Ok;
        Ring* ring = ring_for_this_thread();
        if (!ring->try_push_all(r, n)) return PushResult::Full;
        ring->logged.store(ring->logged.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
        if (drainer_asleep_.load(std::memory_order_relaxed)) [[unlikely]] wake_if_filling(ring);
        return PushResult::Ok;
    }
    // Records one call may push whole (a ring's capacity).
    std::size_t ring_capacity() const noexcept { return ring_capacity_; }
    void count_dropped(std::size_t n = 1) noexcept;
    // push_blocking for try_push_all's records (n <= ring_capacity()): whole, or dropped whole on timeout.
    bool push_blocking_all(const Record* r, std::size_t n);
    // Waits until r fits (block policy); false if the stream closed meanwhile. Call without the GIL. A wait
    // is bounded by block_timeout_s: then r is dropped and counted (dropped, timed_out), true is returned, and
    // until the drainer takes records again later pushes to a full ring drop at once instead of waiting.
    bool push_blocking(const Record& r);
    bool drop_when_full() const noexcept { return cfg_.drop_when_full; }

    // Queues a binned histogram; false when dropped (drop policy, or a block-policy wait that timed out).
    // raw: the segment's raw-values file it was binned from (0: none), settled under the same lock.
    bool push_histogram(HistogramRecord&& h, std::uint32_t raw = 0);

    // Sender side: the next sealed batch, or nothing after timeout_s (or once closed and empty).
    std::optional<SealedBatch> next_batch(double timeout_s);
    // Seals everything logged before this call; returns the last sequence number sealed so far, or nothing
    // if that took longer than timeout_s (the sender is behind and the sealed queue is full).
    std::optional<std::uint64_t> flush(double timeout_s);
    // Sender side: batches up to sequence are acknowledged, refused, spooled or lost: their journal part is free.
    void retire(std::uint64_t sequence);
    // Seals what is left and stops the drainer; next_batch still returns what is queued.
    void close();
    // True once closed and every sealed batch has been taken.
    bool exhausted();

    StreamStats stats();
    SegmentInfo segment_info();
    // The segment's JSON metadata (run, rank, stream, directory...); false if there is no segment or it is too long.
    bool set_segment_meta(const std::string& json);
    // Marks the segment finished and removes its file (after close and once the sender is done); true if removed.
    bool release_segment();

private:
    Ring* ring_for_this_thread();
    Ring* register_ring();
    void run();
    std::size_t drain(std::size_t max_records);
    void seal_locked(std::unique_lock<std::mutex>& lock);
    std::size_t open_bound() const;  // under mu_
    std::size_t budget() const;      // under mu_
    void count_timed_out(std::size_t n = 1) noexcept;
    // Producer side, off the fast path, while the drainer is in a long idle sleep: once the ring is more than
    // half full, the first producer to see it clears drainer_asleep_ and wakes the drainer, so that a burst does
    // not wait for the sleep to end. Sparse logging never pays for a wake-up (a syscall).
    void wake_if_filling(const Ring* ring) noexcept;
    bool rings_hold_records();  // any record pushed but not drained (drainer thread)

    const StreamConfig cfg_;
    const std::uint64_t uid_;
    const std::size_t ring_capacity_;
    std::unique_ptr<Segment> segment_;
    std::string segment_error_;
    std::atomic<unsigned> unsafe_rings_{0};
    std::uint64_t unsafe_series_ = 0;      // under mu_
    std::uint64_t unsafe_histograms_ = 0;  // under mu_
    std::uint64_t next_hist_index_ = 0;    // under mu_
    std::deque<std::pair<std::uint64_t, std::uint64_t>> seal_ends_;  // under mu_: (sequence, journal end)

    std::mutex rings_mu_;
    std::vector<std::unique_ptr<Ring>> rings_;
    std::unordered_map<std::thread::id, Ring*> ring_of_thread_;
    std::atomic<std::uint64_t> extra_dropped_{0};
    std::atomic<std::uint64_t> extra_blocked_{0};
    std::atomic<std::uint64_t> hist_logged_{0};
    std::atomic<bool> closed_for_producers_{false};
    // The drainer is in an idle sleep longer than its 1 ms poll (set by the drainer, cleared by the producer
    // that wakes it or by the drainer once awake). Producers read it with one relaxed load.
    std::atomic<bool> drainer_asleep_{false};
    std::atomic<std::uint64_t> timed_out_{0};
    std::atomic<bool> stalled_{false};  // a block-policy wait timed out and the drainer has not taken records since
    std::atomic<std::size_t> open_bytes_{0};  // the open batch: drained records and histograms

    std::mutex mu_;  // guards everything below
    std::condition_variable wake_drainer_;
    std::condition_variable batch_ready_;
    std::condition_variable room_;
    std::vector<SeriesDef> pending_defs_;
    std::size_t pending_defs_bytes_ = 0;
    std::vector<HistogramRecord> pending_hists_;
    std::size_t pending_hist_bytes_ = 0;
    std::deque<SealedBatch> sealed_;
    std::size_t sealed_bytes_ = 0;
    std::uint64_t next_sequence_ = 1;
    std::uint64_t flush_requested_ = 0;
    std::uint64_t flush_served_ = 0;
    bool closing_ = false;
    bool closed_ = false;
    StreamStats sealed_stats_;

    // drainer-thread state
    Encoder encoder_;
    std::vector<Record> drained_;
    std::size_t drained_hist_bytes_ = 0;
    std::size_t drained_hists_ = 0;
    double oldest_ = 0.0;
    std::uint32_t next_series_ = 0;

    std::thread thread_;
};

double wall_clock_now() noexcept;

}  // namespace stepwire
