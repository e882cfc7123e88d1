// Skippable-frame payloads of format v1 (docs/FORMAT.md section 2): builders used by the writer and
// a parser used by the decoder. Every payload starts with "DDL1" + kind and ends with its crc32.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "codec.hpp"
#include "crc32.hpp"

namespace ddl {

constexpr size_t kFrameHead = 8;  // u32 magic + u32 payload size
constexpr size_t kSegmentHeaderPayload = 28;
constexpr size_t kBlockHeaderPayload = 36;
constexpr size_t kSegmentFooterPayload = 24;
constexpr size_t kRegistrationFixed = 36;  // payload without the JSON text

struct BlockHeader {
    uint32_t block_seq = 0;
    uint32_t n_records = 0;
    uint32_t raw_size = 0;
    uint32_t compressed_size = 0;
    uint32_t compressed_crc = 0;
    uint32_t raw_crc = 0;
};

struct RegistrationInfo {
    uint32_t stream_id = 0;
    double epoch_scale = 1.0;
    double value_scale = 1.0;
    bool exact = false;
    bool periodic = false;
    std::string json;
};

namespace detail {
// Writes the frame head and the common payload prefix; returns the payload start.
inline uint8_t* begin_frame(Bytes& out, size_t payload_size, uint8_t kind) {
    uint8_t* p = out.reserve_tail(kFrameHead + payload_size);
    put_u32(p, kSkippableMagic);
    put_u32(p + 4, uint32_t(payload_size));
    std::memset(p + kFrameHead, 0, payload_size);
    std::memcpy(p + kFrameHead, "DDL1", 4);
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

inline void append_registration(Bytes& out, const RegistrationInfo& r) {
    const size_t size = kRegistrationFixed + r.json.size();
    uint8_t* p = detail::begin_frame(out, size, kKindRegistration);
    p[5] = uint8_t((r.exact ? 1 : 0) | (r.periodic ? 2 : 0));
    put_u32(p + 8, r.stream_id);
    put_f64(p + 12, r.epoch_scale);
    put_f64(p + 20, r.exact ? 0.0 : r.value_scale);
    put_u32(p + 28, uint32_t(r.json.size()));
    std::memcpy(p + 32, r.json.data(), r.json.size());
    detail::end_frame(out, p, size);
}

inline void append_block_header(Bytes& out, const BlockHeader& h) {
    uint8_t* p = detail::begin_frame(out, kBlockHeaderPayload, kKindBlockHeader);
    put_u32(p + 8, h.block_seq);
    put_u32(p + 12, h.n_records);
    put_u32(p + 16, h.raw_size);
    put_u32(p + 20, h.compressed_size);
    put_u32(p + 24, h.compressed_crc);
    put_u32(p + 28, h.raw_crc);
    detail::end_frame(out, p, kBlockHeaderPayload);
}

inline void append_segment_footer(Bytes& out, uint32_t n_blocks, uint64_t n_records) {
    uint8_t* p = detail::begin_frame(out, kSegmentFooterPayload, kKindSegmentFooter);
    put_u32(p + 8, n_blocks);
    put_u64(p + 12, n_records);
    detail::end_frame(out, p, kSegmentFooterPayload);
}

// Checks the prefix, the crc and the size a kind requires. `payload` has `size` bytes.
inline bool payload_valid(const uint8_t* payload, size_t size, uint8_t& kind) {
    if (size < 9 || std::memcmp(payload, "DDL1", 4) != 0) return false;
    kind = payload[4];
    switch (kind) {
        case kKindSegmentHeader: if (size != kSegmentHeaderPayload) return false; break;
        case kKindBlockHeader: if (size != kBlockHeaderPayload) return false; break;
        case kKindSegmentFooter: if (size != kSegmentFooterPayload) return false; break;
        case kKindRegistration:
            if (size < kRegistrationFixed || get_u32(payload + 28) != size - kRegistrationFixed)
                return false;
            break;
        default: return false;
    }
    return get_u32(payload + size - 4) == crc32(payload, size - 4);
}

inline BlockHeader parse_block_header(const uint8_t* p) {
    BlockHeader h;
    h.block_seq = get_u32(p + 8);
    h.n_records = get_u32(p + 12);
    h.raw_size = get_u32(p + 16);
    h.compressed_size = get_u32(p + 20);
    h.compressed_crc = get_u32(p + 24);
    h.raw_crc = get_u32(p + 28);
    return h;
}

inline RegistrationInfo parse_registration(const uint8_t* p) {
    RegistrationInfo r;
    r.exact = (p[5] & 1) != 0;
    r.periodic = (p[5] & 2) != 0;
    r.stream_id = get_u32(p + 8);
    r.epoch_scale = get_f64(p + 12);
    r.value_scale = get_f64(p + 20);
    const uint32_t len = get_u32(p + 28);
    r.json.assign(reinterpret_cast<const char*>(p + 32), len);
    return r;
}

}  // namespace ddl
