// A single-producer single-consumer ring of fixed-size records: one per producing thread.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "scheme.hpp"

namespace stepwire {

class Ring {
public:
    explicit Ring(std::size_t capacity_pow2)
        : buf_(new Record[capacity_pow2]), mask_(capacity_pow2 - 1) {}

    // Producer side. No lock, no allocation: false when the ring is full.
    bool try_push(const Record& r) noexcept {
        const std::uint64_t head = head_.load(std::memory_order_relaxed);
        if (head - cached_tail_ > mask_) {
            cached_tail_ = tail_.load(std::memory_order_acquire);
            if (head - cached_tail_ > mask_) return false;
        }
        buf_[head & mask_] = r;
        head_.store(head + 1, std::memory_order_release);
        return true;
    }

    // Producer side: pushes as many of r[0..n) as fit, with one release store; returns how many.
    std::size_t try_push_many(const Record* r, std::size_t n) noexcept {
        const std::uint64_t head = head_.load(std::memory_order_relaxed);
        std::size_t room = static_cast<std::size_t>(mask_ + 1 - (head - cached_tail_));
        if (room < n) {
            cached_tail_ = tail_.load(std::memory_order_acquire);
            room = static_cast<std::size_t>(mask_ + 1 - (head - cached_tail_));
        }
        if (n > room) n = room;
        for (std::size_t i = 0; i < n; ++i) buf_[(head + i) & mask_] = r[i];
        head_.store(head + n, std::memory_order_release);
        return n;
    }

    // Consumer side: copies up to max records out, returns how many.
    std::size_t pop(Record* out, std::size_t max) noexcept {
        const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
        const std::uint64_t head = head_.load(std::memory_order_acquire);
        std::size_t n = static_cast<std::size_t>(head - tail);
        if (n > max) n = max;
        for (std::size_t i = 0; i < n; ++i) out[i] = buf_[(tail + i) & mask_];
        tail_.store(tail + n, std::memory_order_release);
        return n;
    }

    std::size_t size() const noexcept {
        return static_cast<std::size_t>(head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire));
    }

    // Counters written by the producer only; read by anyone.
    std::atomic<std::uint64_t> logged{0};
    std::atomic<std::uint64_t> dropped{0};
    std::atomic<std::uint64_t> blocked{0};

private:
    std::unique_ptr<Record[]> buf_;
    std::size_t mask_;
    alignas(64) std::atomic<std::uint64_t> head_{0};
    std::uint64_t cached_tail_ = 0;  // producer's last view of tail_
    alignas(64) std::atomic<std::uint64_t> tail_{0};
};

}  // namespace stepwire
