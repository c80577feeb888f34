// A single-producer single-consumer ring of fixed-size records: one per producing thread. Its buffer and
// cursors live either in process memory or in a stream's shared-memory segment (segment.hpp), where a second
// process can read what a dead producer left: the records in [tail, head) once head was published.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "scheme.hpp"

namespace stepwire {

// Where a ring's cursors and records live when they are not the ring's own (a slot of a shared segment).
struct RingMemory {
    std::atomic<std::uint64_t>* head;
    std::atomic<std::uint64_t>* tail;
    Record* records;
};

class Ring {
public:
    explicit Ring(std::size_t capacity_pow2)
        : own_(new Record[capacity_pow2]),
          buf_(own_.get()),
          mask_(capacity_pow2 - 1),
          head_(&own_head_),
          tail_(&own_tail_) {}
    // A ring over external memory (capacity_pow2 records; cursors start where they are).
    Ring(std::size_t capacity_pow2, RingMemory mem)
        : buf_(mem.records), mask_(capacity_pow2 - 1), head_(mem.head), tail_(mem.tail) {
        cached_tail_ = tail_->load(std::memory_order_acquire);
    }

    // Producer side. No lock, no allocation: false when the ring is full.
    bool try_push(const Record& r) noexcept {
        const std::uint64_t head = head_->load(std::memory_order_relaxed);
        if (head - cached_tail_ > mask_) {
            cached_tail_ = tail_->load(std::memory_order_acquire);
            if (head - cached_tail_ > mask_) return false;
        }
        buf_[head & mask_] = r;
        head_->store(head + 1, std::memory_order_release);
        return true;
    }

    // Producer side: pushes all of r[0..n) with one release store, or none of them (false) when they do not
    // fit: a reader of the ring sees either every record of the call or none.
    bool try_push_all(const Record* r, std::size_t n) noexcept {
        const std::uint64_t head = head_->load(std::memory_order_relaxed);
        std::size_t room = static_cast<std::size_t>(mask_ + 1 - (head - cached_tail_));
        if (room < n) {
            cached_tail_ = tail_->load(std::memory_order_acquire);
            room = static_cast<std::size_t>(mask_ + 1 - (head - cached_tail_));
            if (room < n) return false;
        }
        for (std::size_t i = 0; i < n; ++i) buf_[(head + i) & mask_] = r[i];
        head_->store(head + n, std::memory_order_release);
        return true;
    }

    // Producer side: pushes as many of r[0..n) as fit, with one release store; returns how many.
    std::size_t try_push_many(const Record* r, std::size_t n) noexcept {
        const std::uint64_t head = head_->load(std::memory_order_relaxed);
        std::size_t room = static_cast<std::size_t>(mask_ + 1 - (head - cached_tail_));
        if (room < n) {
            cached_tail_ = tail_->load(std::memory_order_acquire);
            room = static_cast<std::size_t>(mask_ + 1 - (head - cached_tail_));
        }
        if (n > room) n = room;
        for (std::size_t i = 0; i < n; ++i) buf_[(head + i) & mask_] = r[i];
        head_->store(head + n, std::memory_order_release);
        return n;
    }

    // Consumer side: copies up to max records out without taking them (commit() takes them); returns how many.
    std::size_t peek(Record* out, std::size_t max, std::uint64_t* first) const noexcept {
        const std::uint64_t tail = tail_->load(std::memory_order_relaxed);
        const std::uint64_t head = head_->load(std::memory_order_acquire);
        std::size_t n = static_cast<std::size_t>(head - tail);
        if (n > max) n = max;
        for (std::size_t i = 0; i < n; ++i) out[i] = buf_[(tail + i) & mask_];
        *first = tail;
        return n;
    }
    // Consumer side: the n records peek() returned leave the ring (their room goes back to the producer).
    void commit(std::size_t n) noexcept {
        tail_->store(tail_->load(std::memory_order_relaxed) + n, std::memory_order_release);
    }

    // Consumer side: copies up to max records out, returns how many.
    std::size_t pop(Record* out, std::size_t max) noexcept {
        std::uint64_t first;
        const std::size_t n = peek(out, max, &first);
        commit(n);
        return n;
    }

    std::size_t size() const noexcept {
        return static_cast<std::size_t>(head_->load(std::memory_order_acquire) - tail_->load(std::memory_order_acquire));
    }
    std::size_t capacity() const noexcept { return mask_ + 1; }

    // Counters written by the producer only; read by anyone.
    std::atomic<std::uint64_t> logged{0};
    std::atomic<std::uint64_t> dropped{0};
    std::atomic<std::uint64_t> blocked{0};
    int slot = -1;  // the segment slot this ring lives in, -1 in process memory

private:
    std::unique_ptr<Record[]> own_;
    Record* buf_;
    std::size_t mask_;
    std::atomic<std::uint64_t>* head_;
    std::atomic<std::uint64_t>* tail_;
    alignas(64) std::atomic<std::uint64_t> own_head_{0};
    std::uint64_t cached_tail_ = 0;  // producer's last view of tail_
    alignas(64) std::atomic<std::uint64_t> own_tail_{0};
};

}  // namespace stepwire
