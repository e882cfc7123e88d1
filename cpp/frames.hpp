// Skippable-frame payloads (docs/FORMAT.md sections 2, 3 and 8): builders of format 2 used by the
// writer, and the checks and parsers of formats 2 and 1 used by the decoder. Every payload starts
// with "DDL2" (or "DDL1") + kind and ends with its crc32.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "codec.hpp"
#include "crc32.hpp"

namespace ddl {

constexpr size_t kFrameHead = 8;  // u32 magic + u32 payload size
constexpr size_t kSegmentHeaderPayload = 28;
constexpr size_t kBlockHeaderPayload = 56;
constexpr size_t kBlockHeaderPayloadV1 = 36;
constexpr size_t kSegmentFooterPayload = 24;
constexpr size_t kRegistrationsFixed = 28;    // format 2: payload without the body
constexpr size_t kRegistrationFixedV1 = 36;   // format 1: payload without the JSON text

// Registration flags (FORMAT.md section 3.1).
constexpr uint8_t kFlagExact = 1;
constexpr uint8_t kFlagPeriodic = 2;
constexpr uint8_t kFlagAccumulator = 4;

struct BlockHeader {
    uint32_t block_seq = 0;
    uint32_t n_records = 0;
    uint32_t raw_size = 0;
    uint32_t compressed_size = 0;
    uint32_t compressed_crc = 0;
    uint32_t raw_crc = 0;
    // Format 2 only.
    uint64_t nnz = 0;
    uint32_t n_streams = 0;
    uint32_t min_sid = 0;
    uint32_t max_sid = 0;
};

struct Label {
    std::string name;
    std::string value_json;  // the value as JSON text
};

// One stream's registration: what the writer writes and a reader needs to decode its records.
struct Registration {
    uint32_t stream_id = 0;
    double epoch_scale = 1.0;
    double value_scale = 0.0;  // 0 when exact
    double periodicity = 0.0;  // periodic streams only
    bool exact = false;
    bool periodic = false;
    bool accumulator = false;
    std::vector<Label> labels;

    uint8_t flags() const {
        return uint8_t((exact ? kFlagExact : 0) | (periodic ? kFlagPeriodic : 0) |
                       (periodic && accumulator ? kFlagAccumulator : 0));
    }
};

namespace detail {
// Writes the frame head and the common payload prefix; returns the payload start.
inline uint8_t* begin_frame(Bytes& out, size_t payload_size, uint8_t kind) {
    uint8_t* p = out.reserve_tail(kFrameHead + payload_size);
    put_u32(p, kSkippableMagic);
    put_u32(p + 4, uint32_t(payload_size));
    std::memset(p + kFrameHead, 0, payload_size);
    std::memcpy(p + kFrameHead, "DDL2", 4);
    p[kFrameHead + 4] = kind;
    return p + kFrameHead;
}
inline void end_frame(Bytes& out, uint8_t* payload, size_t payload_size) {
    put_u32(payload + payload_size - 4, crc32(payload, payload_size - 4));
    out.commit_to(payload + payload_size);
}
}  // namespace detail

inline void append_segment_header(Bytes& out, uint32_t segment_no, uint64_t created_ns,
                                  uint32_t pid) {
    uint8_t* p = detail::begin_frame(out, kSegmentHeaderPayload, kKindSegmentHeader);
    p[5] = kFormatVersion;
    put_u32(p + 8, segment_no);
    put_u64(p + 12, created_ns);
    put_u32(p + 20, pid);
    detail::end_frame(out, p, kSegmentHeaderPayload);
}

// A registrations frame around `body` (raw, or one zstd frame of the raw body when `compressed`).
inline void append_registrations(Bytes& out, uint32_t entries, uint32_t first_string_id,
                                 uint32_t raw_size, uint32_t raw_crc, const uint8_t* body,
                                 size_t body_size, bool compressed) {
    const size_t size = kRegistrationsFixed + body_size;
    uint8_t* p = detail::begin_frame(out, size, kKindRegistration);
    p[5] = compressed ? 1 : 0;
    put_u32(p + 8, entries);
    put_u32(p + 12, first_string_id);
    put_u32(p + 16, raw_size);
    put_u32(p + 20, raw_crc);
    if (body_size) std::memcpy(p + 24, body, body_size);
    detail::end_frame(out, p, size);
}

// The 56-byte block header frame; written into `dst` (kFrameHead + kBlockHeaderPayload bytes).
inline void write_block_header(uint8_t* dst, const BlockHeader& h) {
    put_u32(dst, kSkippableMagic);
    put_u32(dst + 4, uint32_t(kBlockHeaderPayload));
    uint8_t* p = dst + kFrameHead;
    std::memset(p, 0, kBlockHeaderPayload);
    std::memcpy(p, "DDL2", 4);
    p[4] = kKindBlockHeader;
    put_u32(p + 8, h.block_seq);
    put_u32(p + 12, h.n_records);
    put_u32(p + 16, h.raw_size);
    put_u32(p + 20, h.compressed_size);
    put_u32(p + 24, h.compressed_crc);
    put_u32(p + 28, h.raw_crc);
    put_u64(p + 32, h.nnz);
    put_u32(p + 40, h.n_streams);
    put_u32(p + 44, h.min_sid);
    put_u32(p + 48, h.max_sid);
    put_u32(p + 52, crc32(p, 52));
}

inline void append_segment_footer(Bytes& out, uint32_t n_blocks, uint64_t n_records) {
    uint8_t* p = detail::begin_frame(out, kSegmentFooterPayload, kKindSegmentFooter);
    put_u32(p + 8, n_blocks);
    put_u64(p + 12, n_records);
    detail::end_frame(out, p, kSegmentFooterPayload);
}

// Is `payload` (of `size` bytes) a valid frame payload of format `version` (1 or 2)? Checks the
// prefix, the kind, the size the kind requires and the crc (FORMAT.md sections 4 and 8.2).
inline bool payload_valid(const uint8_t* payload, size_t size, int version, uint8_t& kind) {
    if (size < 9 || std::memcmp(payload, version == 2 ? "DDL2" : "DDL1", 4) != 0) return false;
    kind = payload[4];
    switch (kind) {
        case kKindSegmentHeader:
            if (size != kSegmentHeaderPayload) return false;
            break;
        case kKindBlockHeader:
            if (size != (version == 2 ? kBlockHeaderPayload : kBlockHeaderPayloadV1)) return false;
            break;
        case kKindSegmentFooter:
            if (size != kSegmentFooterPayload) return false;
            break;
        case kKindRegistration:
            if (version == 2) {
                if (size < kRegistrationsFixed) return false;
                // An uncompressed body is exactly its raw size; a compressed one is checked when
                // it is decompressed.
                if (!(payload[5] & 1) && get_u32(payload + 16) != size - kRegistrationsFixed)
                    return false;
            } else if (size < kRegistrationFixedV1 || get_u32(payload + 28) > kMaxJson ||
                       get_u32(payload + 28) != size - kRegistrationFixedV1) {
                return false;
            }
            break;
        default:
            return false;
    }
    return get_u32(payload + size - 4) == crc32(payload, size - 4);
}

inline BlockHeader parse_block_header(const uint8_t* p, int version) {
    BlockHeader h;
    h.block_seq = get_u32(p + 8);
    h.n_records = get_u32(p + 12);
    h.raw_size = get_u32(p + 16);
    h.compressed_size = get_u32(p + 20);
    h.compressed_crc = get_u32(p + 24);
    h.raw_crc = get_u32(p + 28);
    if (version == 2) {
        h.nnz = get_u64(p + 32);
        h.n_streams = get_u32(p + 40);
        h.min_sid = get_u32(p + 44);
        h.max_sid = get_u32(p + 48);
    }
    return h;
}

}  // namespace ddl
