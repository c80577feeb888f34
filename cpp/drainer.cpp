#include "drainer.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

#ifdef __linux__
#include <pthread.h>
#endif

namespace stepwire {
namespace {

std::atomic<std::uint64_t> g_next_uid{1};

std::size_t round_up_pow2(std::size_t n) {
    std::size_t p = 1024;
    while (p < n) p <<= 1;
    return p;
}

// The drainer polls its rings every kIdlePoll while records arrive. After consecutive rounds that find nothing
// it sleeps twice as long each time, up to kIdleMax (an idle client wakes 50 times a second, not 1,000); a
// producer whose ring passes half full wakes it from those longer sleeps (drainer_asleep_). kIdleMax bounds
// what a missed wake-up costs and how stale the segment's heartbeat gets; a sleep also ends when the open batch
// falls due, and records found after a sleep count as old as its start, so flush_interval_s still holds.
constexpr auto kIdlePoll = std::chrono::microseconds(1000);
constexpr auto kIdleMax = std::chrono::microseconds(20000);
// Waits longer than this are taken as "no bound" (a steady_clock deadline that far out would overflow).
constexpr double kNoTimeout = 1e9;

template <typename T>
std::size_t vec_bytes(const std::vector<T>& v) {
    return v.size() * sizeof(T);
}

// What a sealed batch occupies (its columns and definitions), for the bound on the sealed queue.
std::size_t sealed_size(const SealedBatch& b) {
    std::size_t n = sizeof(SealedBatch);
    for (const SeriesDef& d : b.defs) n += sizeof(SeriesDef) + d.name.size();
    n += vec_bytes(b.group_series) + vec_bytes(b.group_lengths) + vec_bytes(b.steps) + vec_bytes(b.values) +
         vec_bytes(b.wall_times);
    n += vec_bytes(b.hist_series) + vec_bytes(b.hist_steps) + vec_bytes(b.hist_wall_times) + vec_bytes(b.hist_k) +
         vec_bytes(b.hist_count) + vec_bytes(b.hist_sum) + vec_bytes(b.hist_min) + vec_bytes(b.hist_max) +
         vec_bytes(b.hist_nan) + vec_bytes(b.hist_pos_inf) + vec_bytes(b.hist_neg_inf) + vec_bytes(b.hist_lengths) +
         vec_bytes(b.bucket_indices) + vec_bytes(b.bucket_counts);
    return n;
}

}  // namespace

double wall_clock_now() noexcept {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Stream::Stream(StreamConfig cfg)
    : cfg_(cfg), uid_(g_next_uid.fetch_add(1)), ring_capacity_(round_up_pow2(cfg.ring_capacity)) {
    if (!cfg_.shm_path.empty() && !cfg_.discard) {
        const std::size_t journal =
            cfg_.journal_bytes > 0 ? cfg_.journal_bytes : cfg_.max_sealed_bytes + cfg_.max_batch_bytes;
        const std::size_t queue = cfg_.queue_bytes > 0 ? cfg_.queue_bytes
                                                       : cfg_.max_pending_histogram_bytes * 5 / 4 + (1u << 20);
        segment_ = Segment::create(cfg_.shm_path, cfg_.shm_slots, round_up_pow2(cfg_.ring_capacity), journal,
                                   cfg_.table_bytes, queue, &segment_error_);
    }
    thread_ = std::thread([this] { run(); });
}

Stream::~Stream() { close(); }

std::uint32_t Stream::define(std::string name, SeriesKind kind) {
    std::lock_guard lock(mu_);
    const std::uint32_t id = next_series_++;
    if (segment_ && !segment_->define(id, kind, name)) ++unsafe_series_;
    pending_defs_bytes_ += sizeof(SeriesDef) + name.size();
    pending_defs_.push_back(SeriesDef{id, std::move(name), kind});
    return id;
}

Ring* Stream::ring_for_this_thread() {
    thread_local std::uint64_t cached_uid = 0;
    thread_local Ring* cached_ring = nullptr;
    if (cached_uid == uid_) return cached_ring;
    cached_ring = register_ring();
    cached_uid = uid_;
    return cached_ring;
}

Ring* Stream::register_ring() {
    std::lock_guard lock(rings_mu_);
    auto [it, inserted] = ring_of_thread_.try_emplace(std::this_thread::get_id(), nullptr);
    if (inserted) {
        const std::size_t capacity = ring_capacity_;
        RingMemory mem{};
        int slot = -1;
        if (segment_ && segment_->claim_slot(&mem, &slot)) {
            rings_.push_back(std::make_unique<Ring>(capacity, mem));
            rings_.back()->slot = slot;
        } else {
            if (segment_) unsafe_rings_.fetch_add(1, std::memory_order_relaxed);
            rings_.push_back(std::make_unique<Ring>(capacity));
        }
        it->second = rings_.back().get();
    }
    return it->second;
}

void Stream::wake_if_filling(const Ring* ring) noexcept {
    // one producer wakes it per sleep; notify_one without mu_ may land just before the drainer waits, and
    // then costs that one sleep (kIdleMax at most), never a hang
    if (ring->size() > ring->capacity() / 2 && drainer_asleep_.exchange(false, std::memory_order_relaxed)) {
        wake_drainer_.notify_one();
    }
}

bool Stream::rings_hold_records() {
    std::lock_guard lock(rings_mu_);
    for (const auto& r : rings_) {
        if (r->size() > 0) return true;
    }
    return false;
}

void Stream::count_dropped(std::size_t n) noexcept { extra_dropped_.fetch_add(n, std::memory_order_relaxed); }

void Stream::count_timed_out(std::size_t n) noexcept {
    stalled_.store(true, std::memory_order_relaxed);
    timed_out_.fetch_add(n, std::memory_order_relaxed);
    extra_dropped_.fetch_add(n, std::memory_order_relaxed);
}

bool Stream::push_blocking_all(const Record* r, std::size_t n) {
    using clock = std::chrono::steady_clock;
    const bool bounded = cfg_.block_timeout_s < kNoTimeout;
    const clock::time_point deadline =
        bounded ? clock::now() + std::chrono::duration_cast<clock::duration>(
                                     std::chrono::duration<double>(cfg_.block_timeout_s))
                : clock::time_point::max();
    bool waited = false;
    for (;;) {
        switch (try_push_all(r, n)) {
            case PushResult::Ok:
                return true;
            case PushResult::Closed:
                return false;
            case PushResult::Full:
                if (stalled_.load(std::memory_order_relaxed) || (bounded && clock::now() >= deadline)) {
                    count_timed_out(n);
                    return true;
                }
                if (!waited) {
                    extra_blocked_.fetch_add(1, std::memory_order_relaxed);
                    waited = true;
                }
                wake_drainer_.notify_one();
                std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }
}

bool Stream::push_blocking(const Record& r) {
    using clock = std::chrono::steady_clock;
    const bool bounded = cfg_.block_timeout_s < kNoTimeout;
    const clock::time_point deadline =
        bounded ? clock::now() + std::chrono::duration_cast<clock::duration>(
                                     std::chrono::duration<double>(cfg_.block_timeout_s))
                : clock::time_point::max();
    bool waited = false;
    for (;;) {
        switch (try_push(r)) {
            case PushResult::Ok:
                return true;
            case PushResult::Closed:
                return false;
            case PushResult::Full:
                // Still stalled since a wait timed out: the pipeline has not moved, so waiting again would only
                // hold the training loop up once more per record.
                if (stalled_.load(std::memory_order_relaxed) || (bounded && clock::now() >= deadline)) {
                    count_timed_out();
                    return true;
                }
                if (!waited) {
                    extra_blocked_.fetch_add(1, std::memory_order_relaxed);
                    waited = true;
                }
                wake_drainer_.notify_one();
                std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }
}

bool Stream::push_histogram(HistogramRecord&& h, std::uint32_t raw) {
    const std::size_t bytes = histogram_bytes(h.hist);
    std::unique_lock lock(mu_);
    if (closing_) return false;
    if (cfg_.discard) return true;
    // Whatever becomes of h from here (queued, dropped and counted), its raw-values file is settled before the
    // lock is released: destroyed before lock, this runs under it.
    struct SettleRaw {
        Segment* segment;
        std::uint32_t raw;
        ~SettleRaw() {
            if (segment != nullptr && raw != 0) segment->settle_raw(raw);
        }
    } settle{segment_.get(), raw};
    if (!pending_hists_.empty() && pending_hist_bytes_ + bytes > cfg_.max_pending_histogram_bytes) {
        if (cfg_.drop_when_full) {
            extra_dropped_.fetch_add(1, std::memory_order_relaxed);
            return false;
        }
        const auto has_room = [&] {
            return closing_ || pending_hists_.empty() || pending_hist_bytes_ + bytes <= cfg_.max_pending_histogram_bytes;
        };
        if (stalled_.load(std::memory_order_relaxed)) {
            count_timed_out();
            return false;
        }
        extra_blocked_.fetch_add(1, std::memory_order_relaxed);
        wake_drainer_.notify_one();
        if (cfg_.block_timeout_s >= kNoTimeout) {
            room_.wait(lock, has_room);
        } else if (!room_.wait_for(lock, std::chrono::duration<double>(cfg_.block_timeout_s), has_room)) {
            count_timed_out();
            return false;
        }
        if (closing_) return false;
    }
    pending_hist_bytes_ += bytes;
    h.index = next_hist_index_++;
    if (segment_) {
        if (segment_->queue_histogram(h, raw)) {
            h.queued_bytes = static_cast<std::uint32_t>(Segment::histogram_entry_bytes(h.hist));
        } else {
            ++unsafe_histograms_;
        }
    }
    pending_hists_.push_back(std::move(h));
    hist_logged_.fetch_add(1, std::memory_order_relaxed);
    return true;
}

std::optional<SealedBatch> Stream::next_batch(double timeout_s) {
    std::unique_lock lock(mu_);
    batch_ready_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return !sealed_.empty() || closed_; });
    if (sealed_.empty()) return std::nullopt;
    SealedBatch b = std::move(sealed_.front());
    sealed_.pop_front();
    sealed_bytes_ -= std::min(sealed_bytes_, sealed_size(b));
    wake_drainer_.notify_one();
    return b;
}

std::optional<std::uint64_t> Stream::flush(double timeout_s) {
    std::unique_lock lock(mu_);
    if (closed_) return next_sequence_ - 1;
    const std::uint64_t ticket = ++flush_requested_;
    wake_drainer_.notify_one();
    if (!batch_ready_.wait_for(lock, std::chrono::duration<double>(timeout_s),
                               [&] { return flush_served_ >= ticket || closed_; })) {
        return std::nullopt;
    }
    return next_sequence_ - 1;
}

void Stream::retire(std::uint64_t sequence) {
    if (!segment_) return;
    std::lock_guard lock(mu_);
    std::uint64_t end = 0;
    bool any = false;
    while (!seal_ends_.empty() && seal_ends_.front().first <= sequence) {
        end = seal_ends_.front().second;
        seal_ends_.pop_front();
        any = true;
    }
    if (any) {
        segment_->retire(end, sequence);
        wake_drainer_.notify_one();
    }
}

SegmentInfo Stream::segment_info() {
    SegmentInfo info;
    std::lock_guard lock(mu_);
    if (!segment_) {
        info.reason = cfg_.shm_path.empty() ? "no shared-memory segment was asked for" : segment_error_;
        return info;
    }
    info.path = segment_->path();
    info.bytes = segment_->bytes();
    info.journal_bytes = segment_->journal_bytes();
    info.slots = segment_->slots();
    info.unsafe_rings = unsafe_rings_.load(std::memory_order_relaxed);
    info.unsafe_series = unsafe_series_;
    info.unsafe_histograms = unsafe_histograms_;
    info.survives_crash = segment_error_.empty();
    info.reason = segment_error_;
    return info;
}

bool Stream::set_segment_meta(const std::string& json) {
    std::lock_guard lock(mu_);
    return segment_ && segment_->set_meta(json);
}

bool Stream::release_segment() {
    std::lock_guard lock(mu_);
    if (!segment_) return false;
    segment_->set_state(1);
    return segment_->unlink();
}

void Stream::close() {
    {
        std::lock_guard lock(mu_);
        closing_ = true;
        closed_for_producers_.store(true);
    }
    wake_drainer_.notify_all();
    room_.notify_all();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

bool Stream::exhausted() {
    std::lock_guard lock(mu_);
    return closed_ && sealed_.empty();
}

StreamStats Stream::stats() {
    StreamStats s;
    {
        std::lock_guard lock(rings_mu_);
        for (const auto& ring : rings_) {
            s.logged += ring->logged.load(std::memory_order_relaxed);
        }
    }
    s.logged += hist_logged_.load(std::memory_order_relaxed);
    s.dropped = extra_dropped_.load(std::memory_order_relaxed);
    s.timed_out = timed_out_.load(std::memory_order_relaxed);
    s.blocked = extra_blocked_.load(std::memory_order_relaxed);
    std::lock_guard lock(mu_);
    s.held_bytes =
        sealed_bytes_ + pending_hist_bytes_ + pending_defs_bytes_ + open_bytes_.load(std::memory_order_relaxed);
    s.sealed_batches = sealed_stats_.sealed_batches;
    s.sealed_items = sealed_stats_.sealed_items;
    return s;
}

std::size_t Stream::drain(std::size_t max_records) {
    std::vector<Ring*> rings;
    {
        std::lock_guard lock(rings_mu_);
        rings.reserve(rings_.size());
        for (const auto& r : rings_) rings.push_back(r.get());
    }
    std::size_t total = 0;
    for (Ring* ring : rings) {
        if (total >= max_records) break;
        const std::size_t before = drained_.size();
        const std::size_t want = std::min(ring->size(), max_records - total);
        drained_.resize(before + want);
        std::uint64_t first = 0;
        const std::size_t got = ring->peek(drained_.data() + before, want, &first);
        drained_.resize(before + got);
        // into the journal before they leave the ring: at every moment each record is in one or both, and a
        // survivor takes a ring's records from where the journal's copy of that ring ends
        if (segment_) segment_->journal_records(ring->slot, first, drained_.data() + before, got);
        ring->commit(got);
        total += got;
    }
    return total;
}

void Stream::seal_locked(std::unique_lock<std::mutex>&) {
    const std::uint64_t items = drained_.size() + drained_hists_;
    const std::uint64_t sequence = next_sequence_++;
    SealedBatch b = encoder_.seal(drained_, std::move(pending_defs_), sequence);
    if (segment_) {
        if (!segment_->journal_seal(sequence)) {  // cannot happen while kJournalReserve holds: say so, never guess
            segment_->set_state(2);
            segment_error_ = "the journal had no room for a seal marker";
        }
        seal_ends_.emplace_back(sequence, segment_->journal_write());
        segment_->set_next_sequence(next_sequence_);
    }
    pending_defs_.clear();
    pending_defs_bytes_ = 0;
    drained_.clear();
    drained_hist_bytes_ = 0;
    drained_hists_ = 0;
    oldest_ = 0.0;
    sealed_stats_.sealed_batches += 1;
    sealed_stats_.sealed_items += items;
    sealed_bytes_ += sealed_size(b);
    open_bytes_.store(0, std::memory_order_relaxed);
    sealed_.push_back(std::move(b));
    batch_ready_.notify_all();
}

// An upper bound of what the open batch will occupy once sealed: a record (32 B) becomes at most 32 B of
// columns (24 B, plus 8 B for its series group), a histogram 1 B more than histogram_bytes counts.
std::size_t Stream::open_bound() const {
    return sizeof(SealedBatch) + drained_.size() * sizeof(Record) + drained_hist_bytes_ + drained_hists_ +
           pending_defs_bytes_;
}

// Bytes the open batch may still grow by: sealed batches and the open batch together stay within
// max_sealed_bytes while any sealed batch waits (with none waiting, a batch may grow to max_batch_bytes).
std::size_t Stream::budget() const {
    if (sealed_.empty()) return std::numeric_limits<std::size_t>::max();
    const std::size_t used = sealed_bytes_ + open_bound();
    return used < cfg_.max_sealed_bytes ? cfg_.max_sealed_bytes - used : 0;
}

void Stream::run() {
    const std::size_t max_records = std::max<std::size_t>(1, cfg_.max_batch_bytes / kPointBytes);
    drained_.reserve(max_records);  // the open batch never reallocates past its bound
#ifdef __linux__
    pthread_setname_np(pthread_self(), "stepwire-drain");  // for /proc/self/task/*/comm (tests, profiles)
#endif
    std::chrono::microseconds idle = kIdlePoll;  // the next idle sleep: doubles per empty round up to kIdleMax
    double last_round = 0.0;  // when the previous round began: what this round drains was logged after it
    std::unique_lock lock(mu_);
    for (;;) {
        const double round_start = wall_clock_now();
        const double logged_after = last_round > 0.0 ? last_round : round_start;
        last_round = round_start;
        if (segment_) segment_->heartbeat(static_cast<std::uint64_t>(round_start * 1000.0));
        const bool closing = closing_;
        const std::uint64_t flush_target = flush_requested_;
        std::size_t left = closing ? std::numeric_limits<std::size_t>::max() : budget();
        if ((sealed_.size() >= cfg_.max_sealed || left == 0) && !closing) {
            // back-pressure: the sender is behind; producers fill their rings, then block or drop. next_batch,
            // retire and close change what this waits for under mu_ and notify, so the longer sleep loses nothing.
            wake_drainer_.wait_for(lock, idle);
            idle = std::min(idle * 2, kIdleMax);
            continue;
        }
        lock.unlock();
        std::size_t room = std::min(max_records - std::min(max_records, drained_.size()), left / sizeof(Record));
        if (segment_) {
            std::size_t nrings;
            {
                std::lock_guard rl(rings_mu_);
                nrings = rings_.size();
            }
            room = std::min(room, segment_->journal_room_records(nrings));
        }
        const std::size_t got = room > 0 ? drain(room) : 0;
        if (got > 0) stalled_.store(false, std::memory_order_relaxed);  // the rings have room again
        lock.lock();

        // Histograms join the open batch only while it is under max_batch_bytes, so that no batch outgrows
        // the message size limit however many histograms are queued; the rest wait for the next batch.
        // Within the budget too, except the first histogram of a batch while no sealed batch waits.
        left = closing ? std::numeric_limits<std::size_t>::max() : budget();
        std::size_t taken = 0;
        while (taken < pending_hists_.size() &&
               (drained_hists_ == 0 || drained_.size() * kPointBytes + drained_hist_bytes_ < cfg_.max_batch_bytes)) {
            const std::size_t hb = histogram_bytes(pending_hists_[taken].hist);
            if (hb + 1 > left) break;
            bool journaled = false;
            if (segment_) {
                const std::size_t jb = Segment::histogram_entry_bytes(pending_hists_[taken].hist);
                if (jb <= segment_->journal_bytes() / 2) {  // else it could never fit: sent, but not crash-safe
                    if (jb > segment_->journal_room_bytes()) break;  // waits for the sender to retire batches
                    journaled = true;
                } else {
                    ++unsafe_histograms_;
                }
            }
            left -= hb + 1;
            HistogramRecord& h = pending_hists_[taken++];
            if (journaled) segment_->journal_histogram(h);
            if (h.queued_bytes > 0) segment_->dequeue_histogram(h.queued_bytes);
            drained_hist_bytes_ += hb;
            pending_hist_bytes_ -= hb;
            ++drained_hists_;
            encoder_.add_histogram(std::move(h));
        }
        if (taken > 0) {
            pending_hists_.erase(pending_hists_.begin(), pending_hists_.begin() + static_cast<std::ptrdiff_t>(taken));
            room_.notify_all();
        }

        open_bytes_.store(drained_.size() * sizeof(Record) + drained_hist_bytes_, std::memory_order_relaxed);
        const double now = wall_clock_now();
        const std::size_t bytes = drained_.size() * kPointBytes + drained_hist_bytes_;
        if (bytes > 0 && oldest_ == 0.0) oldest_ = std::min(now, logged_after);
        const bool rings_empty = got < room && pending_hists_.empty();  // everything logged so far is drained
        const bool flushing = flush_target > flush_served_ || closing;
        // Natural batching: while the sender still has a sealed batch to send, sealing another gains no
        // latency, so the open batch keeps growing; fewer, larger batches are what lets a busy collector keep up.
        const bool sender_idle = sealed_.empty();
        const bool due = (sender_idle && (bytes >= cfg_.batch_bytes ||
                                          (bytes > 0 && now - oldest_ >= cfg_.flush_interval_s))) ||
                         bytes >= cfg_.max_batch_bytes || drained_.size() >= max_records || (flushing && rings_empty);
        const bool sealing = due && (bytes > 0 || !pending_defs_.empty());
        if (sealing) seal_locked(lock);

        if (rings_empty && flush_target > flush_served_) {
            flush_served_ = flush_target;
            batch_ready_.notify_all();
        }
        if (closing && rings_empty && drained_.empty() && drained_hists_ == 0 && pending_hists_.empty() &&
            pending_defs_.empty()) {
            closed_ = true;
            flush_served_ = flush_requested_;
            batch_ready_.notify_all();
            room_.notify_all();
            return;
        }
        if (got > 0 || taken > 0 || sealing) {
            idle = kIdlePoll;
            continue;
        }
        // Nothing moved this round. flush() and close() change these under mu_ and notify: if one came while
        // the rings were drained without mu_, go round again instead of sleeping past it.
        if (flush_requested_ != flush_target || closing_ != closing) continue;
        std::chrono::microseconds wait = idle;
        if (bytes > 0 && sender_idle) {  // the open batch falls due flush_interval_s after its oldest item
            const double due_in = oldest_ + cfg_.flush_interval_s - now;
            const auto until_due = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::duration<double>(std::max(0.0, due_in)));
            wait = std::min(wait, std::max(kIdlePoll, until_due));
        }
        // room == 0: records may wait in the rings, but what this waits for is the sender (next_batch and
        // retire notify under mu_), not the producers, whose wake-ups could not help
        const bool long_sleep = wait > kIdlePoll && room > 0;
        if (long_sleep) {
            // Producers read the flag after publishing their records, the drainer reads the rings after
            // raising it: one side at least sees the other, except when the producer's load passes its own
            // store (no fence on the hot path), which leaves that ring filling for this one sleep.
            drainer_asleep_.store(true, std::memory_order_seq_cst);
            if (rings_hold_records()) {
                drainer_asleep_.store(false, std::memory_order_relaxed);
                idle = kIdlePoll;
                continue;
            }
        }
        wake_drainer_.wait_for(lock, wait);
        if (long_sleep) drainer_asleep_.store(false, std::memory_order_relaxed);
        idle = std::min(idle * 2, kIdleMax);
    }
}

}  // namespace stepwire
