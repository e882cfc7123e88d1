#include "decoder.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "crc32.hpp"
#include "errors.hpp"
#include "json_check.hpp"
#include "section_decoder.hpp"

namespace ddl {

const char* skip_kind_name(SkipKind kind) {
    switch (kind) {
        case SkipKind::TornTail: return "torn_tail";
        case SkipKind::CorruptFrame: return "corrupt_frame";
        case SkipKind::BadBlock: return "bad_block";
        case SkipKind::BadSection: return "bad_section";
        case SkipKind::UnregisteredStream: return "unregistered_stream";
        case SkipKind::InvalidRegistration: return "invalid_registration";
        case SkipKind::UnresolvedLabel: return "unresolved_label";
        case SkipKind::AfterFooter: return "after_footer";
        case SkipKind::UnreadableFile: return "unreadable_file";
        case SkipKind::UnsupportedVersion: return "unsupported_version";
        case SkipKind::LegacyChainBroken: return "legacy_chain_broken";
    }
    return "corrupt_frame";
}

template <class T>
void Column<T>::allocate(size_t n) {
    std::free(data_);
    data_ = nullptr;
    size_ = 0;
    // At least one element, so that an empty column still owns a buffer.
    data_ = static_cast<T*>(std::malloc(std::max<size_t>(n, 1) * sizeof(T)));
    if (!data_) throw std::bad_alloc();
    size_ = n;
}
template class Column<uint32_t>;
template class Column<double>;
template class Column<int32_t>;
template class Column<int64_t>;

namespace {

// A byte vector that does not zero what it grows by: file contents and decompressed payloads are
// written over right away.
template <class T>
struct NoInitAllocator : std::allocator<T> {
    template <class U>
    struct rebind {
        using other = NoInitAllocator<U>;
    };
    NoInitAllocator() = default;
    template <class U>
    NoInitAllocator(const NoInitAllocator<U>&) noexcept {}
    template <class U>
    void construct(U* p) noexcept {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};
using ByteBuffer = std::vector<uint8_t, NoInitAllocator<uint8_t>>;

bool read_file(const std::string& path, ByteBuffer& out, std::string& err) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = std::strerror(errno);
        return false;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        err = std::strerror(errno);
        ::close(fd);
        return false;
    }
    out.resize(size_t(st.st_size));
    size_t got = 0;
    while (got < out.size()) {
        const ssize_t r = ::read(fd, out.data() + got, out.size() - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;  // the file shrank under us: decode what we have
        got += size_t(r);
    }
    out.resize(got);
    ::close(fd);
    return true;
}

// The streams a caller asked for: a dense table for the usual small ids, a sorted list otherwise.
class Selection {
public:
    explicit Selection(const DecodeOptions& o) : active_(o.filter), ids_(o.stream_ids) {
        std::sort(ids_.begin(), ids_.end());
        ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());
        if (!ids_.empty() && ids_.back() < (1u << 24)) {
            dense_.assign(size_t(ids_.back()) + 1, 0);
            for (uint32_t s : ids_) dense_[s] = 1;
        }
    }
    bool active() const { return active_; }
    bool keep(uint32_t sid) const {
        if (!active_) return true;
        if (!dense_.empty()) return sid < dense_.size() && dense_[sid];
        return std::binary_search(ids_.begin(), ids_.end(), sid);
    }
    bool any_in(uint32_t lo, uint32_t hi) const {
        if (!active_) return true;
        auto it = std::lower_bound(ids_.begin(), ids_.end(), lo);
        return it != ids_.end() && *it <= hi;
    }

private:
    bool active_;
    std::vector<uint32_t> ids_;
    std::vector<uint8_t> dense_;
};

bool valid_utf8(const uint8_t* p, size_t n) {
    size_t i = 0;
    while (i < n) {
        const uint8_t c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

// The strings of one segment's registration frames by id (FORMAT.md section 3.1).
class StringTable {
public:
    void define(uint32_t id, std::string s) {
        if (id < (1u << 24)) {
            if (id >= dense_.size()) {
                dense_.resize(size_t(id) + 1);
                known_.resize(size_t(id) + 1, 0);
            }
            dense_[id] = std::move(s);
            known_[id] = 1;
        } else {
            sparse_[id] = std::move(s);
        }
    }
    const std::string* find(uint64_t id) const {
        if (id < dense_.size()) return known_[size_t(id)] ? &dense_[size_t(id)] : nullptr;
        auto it = sparse_.find(id);
        return it == sparse_.end() ? nullptr : &it->second;
    }

private:
    std::vector<std::string> dense_;
    std::vector<uint8_t> known_;
    std::unordered_map<uint64_t, std::string> sparse_;
};

// ---------------------------------------------------------------------------------------------
// Walking a segment (FORMAT.md section 4.1), shared by formats 2 and 1.

enum class FrameSize { Ok, Truncated, Bad };

// The length of the standard zstd frame at `p` (of `avail` bytes), from its frame and block headers
// alone (RFC 8878), as the pure-Python reader computes it: Truncated when it runs past `avail`.
FrameSize zstd_frame_size(const uint8_t* p, size_t avail, size_t& size) {
    if (avail < 4) return FrameSize::Truncated;
    if (get_u32(p) != kZstdMagic) return FrameSize::Bad;
    if (avail < 6) return FrameSize::Truncated;
    const uint8_t fhd = p[4];
    if (fhd & 0x08) return FrameSize::Bad;
    const unsigned fcs_flag = fhd >> 6, single = (fhd >> 5) & 1, checksum = (fhd >> 2) & 1;
    static const unsigned did_sizes[4] = {0, 1, 2, 4};
    const unsigned fcs_sizes[4] = {single, 2, 4, 8};
    size_t pos = 5 + (single ? 0 : 1) + did_sizes[fhd & 3] + fcs_sizes[fcs_flag];
    for (;;) {
        if (pos + 3 > avail) return FrameSize::Truncated;
        const uint32_t bh = uint32_t(p[pos]) | (uint32_t(p[pos + 1]) << 8) | (uint32_t(p[pos + 2]) << 16);
        const unsigned type = (bh >> 1) & 3;
        if (type == 3) return FrameSize::Bad;
        pos += 3 + (type == 1 ? 1 : (bh >> 3));
        if (pos > avail) return FrameSize::Truncated;
        if (bh & 1) break;
    }
    pos += 4 * checksum;
    if (pos > avail) return FrameSize::Truncated;
    size = pos;
    return FrameSize::Ok;
}

bool zstd_frame_is_exactly(const uint8_t* p, size_t n) {
    size_t size = 0;
    return zstd_frame_size(p, n, size) == FrameSize::Ok && size == n;
}

// A complete skippable frame at 0 whose payload (>= 9 bytes) ends with the crc32 of the rest.
bool intact_skippable_at_start(const uint8_t* b, size_t n) {
    if (n < kFrameHead || get_u32(b) != kSkippableMagic) return false;
    const size_t psize = get_u32(b + 4);
    if (psize < 9 || psize > n - kFrameHead) return false;
    return get_u32(b + kFrameHead + psize - 4) == crc32(b + kFrameHead, psize - 4);
}


// Is there a valid frame of `version` at `pos`? Sets its kind and payload size.
bool valid_frame_at(const uint8_t* base, size_t size, size_t pos, int version, uint8_t& kind,
                    size_t& psize) {
    if (size - pos < kFrameHead || get_u32(base + pos) != kSkippableMagic) return false;
    psize = get_u32(base + pos + 4);
    if (psize > size - pos - kFrameHead) return false;
    return payload_valid(base + pos + kFrameHead, psize, version, kind);
}

// The first offset >= from where a valid frame of `version` starts, or `size`.
size_t next_valid_frame(const uint8_t* base, size_t size, size_t from, int version) {
    size_t pos = from;
    while (pos + kFrameHead <= size) {
        const void* hit = std::memchr(base + pos, 0x5D, size - pos - kFrameHead + 1);
        if (!hit) break;
        pos = size_t(static_cast<const uint8_t*>(hit) - base);
        uint8_t kind;
        size_t psize;
        if (valid_frame_at(base, size, pos, version, kind, psize)) return pos;
        ++pos;
    }
    return size;
}

struct Reports {
    const std::string& path;
    std::vector<SkipReport>& out;
    void add(uint64_t offset, uint64_t length, SkipKind kind, std::string reason,
             int64_t stream_id = -1) {
        out.push_back({path, offset, length, kind, std::move(reason), stream_id});
    }
};

// Calls on_frame(pos, kind, payload, psize, end) for every valid frame that is not a segment header
// at offset 0, the footer or a block header (on_block(pos, header payload, data, end)); reports
// the rest.
template <class OnRegistration, class OnBlock>
void walk_segment(const uint8_t* base, size_t size, int version, Reports& rep, SegmentSummary& sum,
                  OnRegistration on_registration, OnBlock on_block) {
    size_t pos = 0;
    while (pos < size) {
        uint8_t kind = 0;
        size_t psize = 0;
        if (!valid_frame_at(base, size, pos, version, kind, psize)) {
            const size_t q = next_valid_frame(base, size, pos + 1, version);
            if (q < size) {
                rep.add(pos, q - pos, SkipKind::CorruptFrame,
                        "not a valid frame; " + std::to_string(q - pos) +
                            " byte(s) skipped up to the next valid frame");
                pos = q;
                continue;
            }
            const bool torn = size - pos < kFrameHead ||
                              (get_u32(base + pos) == kSkippableMagic &&
                               uint64_t(get_u32(base + pos + 4)) > size - pos - kFrameHead);
            sum.torn = sum.torn || torn;
            rep.add(pos, size - pos, torn ? SkipKind::TornTail : SkipKind::CorruptFrame,
                    torn ? "torn tail: the file ends inside a frame"
                         : "not a valid frame, and none follows; rest of the segment skipped");
            return;
        }
        const uint8_t* payload = base + pos + kFrameHead;
        const size_t frame_end = pos + kFrameHead + psize;
        switch (kind) {
            case kKindSegmentHeader:
                if (pos != 0)
                    rep.add(pos, frame_end - pos, SkipKind::CorruptFrame,
                            "a segment header in the middle of a segment");
                pos = frame_end;
                break;
            case kKindRegistration:
                on_registration(pos, payload, psize);
                pos = frame_end;
                break;
            case kKindBlockHeader: {
                const BlockHeader h = parse_block_header(payload, version);
                if (h.compressed_size > size - frame_end) {
                    sum.torn = true;
                    rep.add(pos, size - pos, SkipKind::TornTail,
                            "torn tail: the file ends inside block " + std::to_string(h.block_seq));
                    return;
                }
                on_block(pos, h, base + frame_end, frame_end + h.compressed_size);
                pos = frame_end + h.compressed_size;
                break;
            }
            case kKindSegmentFooter:
                sum.has_footer = true;
                pos = frame_end;
                if (pos < size) {
                    rep.add(pos, size - pos, SkipKind::AfterFooter,
                            "data after the segment footer; rest of the segment skipped");
                    return;
                }
                break;
            default:
                pos = frame_end;
        }
    }
}

enum class SegmentFormat { Empty, Legacy, V1, V2, Unsupported, Unknown };

// FORMAT.md section 4.1: the format of a segment, told by its first bytes. Unsupported: `why`
// names the version. Unknown: no valid frame in the file (the caller reports it).
SegmentFormat detect_format(const ByteBuffer& data, std::string& why) {
    const uint8_t* b = data.data();
    const size_t n = data.size();
    if (n == 0) return SegmentFormat::Empty;
    if (n >= 4 && get_u32(b) == kZstdMagic) return SegmentFormat::Legacy;
    if (n >= kFrameHead + 4 && std::memcmp(b + 8, "DDL", 3) == 0 && b[11] != '1' && b[11] != '2' &&
        intact_skippable_at_start(b, n)) {
        const uint8_t v = b[11];
        why = std::string("format \"DDL") + (v >= 32 && v < 127 ? std::string(1, char(v)) : "?") + "\"";
        return SegmentFormat::Unsupported;
    }
    for (int version : {2, 1}) {
        uint8_t kind;
        size_t psize;
        if (!valid_frame_at(b, n, 0, version, kind, psize)) continue;
        if (kind == kKindSegmentHeader && b[kFrameHead + 5] != version) {
            why = "format version " + std::to_string(b[kFrameHead + 5]) + " (in a DDL" +
                  std::to_string(version) + " segment header)";
            return SegmentFormat::Unsupported;
        }
        return version == 2 ? SegmentFormat::V2 : SegmentFormat::V1;
    }
    // A damaged first frame: the first valid frame of either format decides.
    const size_t q2 = next_valid_frame(b, n, 1, 2);
    const size_t q1 = next_valid_frame(b, n, 1, 1);
    if (q1 >= n && q2 >= n) return SegmentFormat::Unknown;
    return q1 < q2 ? SegmentFormat::V1 : SegmentFormat::V2;
}

// ---------------------------------------------------------------------------------------------
// Registrations of one segment, by stream, with the offset of the frame each came from: a block
// uses the latest registration of its stream found before it (FORMAT.md section 3.3).

struct SegmentRegistry {
    std::vector<std::unique_ptr<StreamInfo>> infos;
    std::unordered_map<uint32_t, std::vector<std::pair<uint64_t, const StreamInfo*>>> by_stream;
    StringTable strings;

    void add(uint64_t pos, std::unique_ptr<StreamInfo> info) {
        const uint32_t sid = info->reg.stream_id;
        by_stream[sid].emplace_back(pos, info.get());
        infos.push_back(std::move(info));
    }
    const StreamInfo* find(uint32_t sid, uint64_t before) const {
        auto it = by_stream.find(sid);
        if (it == by_stream.end()) return nullptr;
        const StreamInfo* found = nullptr;
        for (const auto& e : it->second)
            if (e.first < before) found = e.second;
        return found;
    }
};

bool entry_valid(const Registration& r) {
    if (!scale_ok(r.epoch_scale)) return false;
    if (!r.exact && !scale_ok(r.value_scale)) return false;
    if (r.periodic && !scale_ok(r.periodicity)) return false;
    return true;
}

// A format-2 registrations frame (FORMAT.md sections 3.1 and 4.1).
void parse_registrations_v2(uint64_t pos, const uint8_t* payload, size_t psize, ZSTD_DCtx* dctx,
                            std::vector<uint8_t>& buf, SegmentRegistry& reg, Reports& rep) {
    const uint64_t frame_len = kFrameHead + psize;
    const bool compressed = payload[5] & 1;
    const uint32_t entries = get_u32(payload + 8);
    const uint32_t first = get_u32(payload + 12);
    const uint32_t raw_size = get_u32(payload + 16);
    const uint32_t raw_crc = get_u32(payload + 20);
    const uint8_t* body = payload + 24;
    const size_t body_size = psize - kRegistrationsFixed;
    auto invalid = [&](const std::string& why) {
        rep.add(pos, frame_len, SkipKind::InvalidRegistration,
                "registrations frame unusable (" + why + "); its streams are not registered here");
    };
    if (raw_size > kMaxRegistrationBody) return invalid("raw body size beyond the format's bound");
    const uint8_t* raw = body;
    if (compressed) {
        if (!zstd_frame_is_exactly(body, body_size)) return invalid("body is not one zstd frame");
        buf.resize(std::max<size_t>(raw_size, 1));
        const size_t got = ZSTD_decompressDCtx(dctx, buf.data(), raw_size, body, body_size);
        if (ZSTD_isError(got) || got != raw_size)
            return invalid("body does not decompress to its declared size");
        raw = buf.data();
    }
    if (crc32(raw, raw_size) != raw_crc) return invalid("crc mismatch of the body");
    const uint8_t* p = raw;
    const uint8_t* end = raw + raw_size;
    uint64_t n_strings;
    if (!(p = get_varint(p, end, n_strings)) || n_strings > uint64_t(end - p))
        return invalid("bad string count");
    std::vector<std::string> strings;
    strings.reserve(size_t(n_strings));
    for (uint64_t i = 0; i < n_strings; ++i) {
        uint64_t len;
        if (!(p = get_varint(p, end, len)) || len > uint64_t(end - p)) return invalid("truncated string");
        if (!valid_utf8(p, size_t(len))) return invalid("a string is not UTF-8");
        strings.emplace_back(reinterpret_cast<const char*>(p), size_t(len));
        p += len;
    }
    if (uint64_t(first) + n_strings > (uint64_t(1) << 32)) return invalid("string ids beyond 2^32");
    struct Entry {
        Registration r;
        std::vector<std::pair<uint64_t, uint64_t>> label_ids;
    };
    std::vector<Entry> parsed;
    if (entries > uint64_t(end - p)) return invalid("more entries than bytes");
    parsed.reserve(entries);
    for (uint32_t e = 0; e < entries; ++e) {
        Entry en;
        uint64_t sid, n_labels;
        if (!(p = get_varint(p, end, sid)) || sid > 0xFFFFFFFFull) return invalid("bad stream id");
        if (end - p < 17) return invalid("truncated entry");
        const uint8_t flags = *p++;
        en.r.stream_id = uint32_t(sid);
        en.r.exact = flags & kFlagExact;
        en.r.periodic = flags & kFlagPeriodic;
        en.r.accumulator = flags & kFlagAccumulator;
        en.r.epoch_scale = get_f64(p);
        en.r.value_scale = get_f64(p + 8);
        p += 16;
        if (en.r.periodic) {
            if (end - p < 8) return invalid("truncated entry");
            en.r.periodicity = get_f64(p);
            p += 8;
        }
        if (!(p = get_varint(p, end, n_labels)) || n_labels > uint64_t(end - p) / 2)
            return invalid("bad label count");
        en.label_ids.reserve(size_t(n_labels));
        for (uint64_t l = 0; l < n_labels; ++l) {
            uint64_t name, value;
            if (!(p = get_varint(p, end, name)) || !(p = get_varint(p, end, value)))
                return invalid("truncated label");
            en.label_ids.emplace_back(name, value);
        }
        parsed.push_back(std::move(en));
    }
    if (p != end) return invalid("body longer than its entries");
    for (uint64_t i = 0; i < n_strings; ++i) reg.strings.define(uint32_t(first + i), std::move(strings[i]));
    for (auto& en : parsed) {
        const uint32_t sid = en.r.stream_id;
        if (!entry_valid(en.r) || (en.r.accumulator && !en.r.periodic)) {
            rep.add(pos, 0, SkipKind::InvalidRegistration,
                    "registration of stream " + std::to_string(sid) +
                        " has invalid scales, periodicity or flags; ignored",
                    sid);
            continue;
        }
        auto info = std::make_unique<StreamInfo>();
        info->version = 2;
        if (en.r.exact) en.r.value_scale = 0.0;
        info->reg = std::move(en.r);
        std::string missing;
        for (const auto& ids : en.label_ids) {
            const std::string* name = reg.strings.find(ids.first);
            const std::string* value = reg.strings.find(ids.second);
            if (name && value && JsonCheck::valid(value->data(), value->size(), false)) {
                info->reg.labels.push_back({*name, *value});
            } else {
                ++info->unresolved;
                if (!missing.empty()) missing += ", ";
                missing += std::to_string(ids.first) + "=" + std::to_string(ids.second);
            }
        }
        if (info->unresolved)
            rep.add(pos, 0, SkipKind::UnresolvedLabel,
                    "stream " + std::to_string(sid) + ": " + std::to_string(info->unresolved) +
                        " label(s) with strings of a lost registrations frame, or values that "
                        "are not JSON, dropped (string ids " + missing + ")",
                    sid);
        reg.add(pos, std::move(info));
    }
}

// A format-1 registration frame (FORMAT.md section 8.1.2).
void parse_registration_v1(uint64_t pos, const uint8_t* p, size_t psize, SegmentRegistry& reg,
                           Reports& rep) {
    auto info = std::make_unique<StreamInfo>();
    info->version = 1;
    Registration& r = info->reg;
    r.exact = (p[5] & 1) != 0;
    r.periodic = (p[5] & 2) != 0;
    r.stream_id = get_u32(p + 8);
    r.epoch_scale = get_f64(p + 12);
    r.value_scale = get_f64(p + 20);
    const uint32_t len = get_u32(p + 28);
    const char* text = reinterpret_cast<const char*>(p + 32);
    const bool json_ok = valid_utf8(p + 32, len) && JsonCheck::valid(text, len, true);
    if (!json_ok || !(scale_ok(r.epoch_scale) && (r.exact || scale_ok(r.value_scale)))) {
        rep.add(pos, kFrameHead + psize, SkipKind::InvalidRegistration,
                "registration of stream " + std::to_string(r.stream_id) +
                    (json_ok ? " has invalid scales; ignored" : " is not a JSON object; ignored"),
                r.stream_id);
        return;
    }
    if (r.exact) r.value_scale = 0.0;
    info->json.assign(reinterpret_cast<const char*>(p + 32), len);
    reg.add(pos, std::move(info));
}

// ---------------------------------------------------------------------------------------------
// Formats 1 and 0.1.x decode into growable per-segment columns, copied into the final buffers
// afterwards; format 2 decodes in parallel straight into them.

struct VecColumns {
    std::vector<uint32_t> stream_id;
    std::vector<double> epoch;
    std::vector<int64_t> offsets{0};
    std::vector<int64_t> indices;
    std::vector<double> values;
    size_t records() const { return stream_id.size(); }
    void rollback(size_t records, size_t nnz) {
        stream_id.resize(records);
        epoch.resize(records);
        offsets.resize(records + 1);
        indices.resize(nnz);
        values.resize(nnz);
    }
};

// Reads n indices stored as first value + gaps into out[0..n). Returns the position after them,
// or nullptr with `why` set on truncation or an out-of-range index.
const uint8_t* parse_indices(const uint8_t* p, const uint8_t* end, uint64_t n, int64_t* out,
                             std::string& why) {
    uint64_t prev = 0;
    for (uint64_t i = 0; i < n; ++i) {
        uint64_t v;
        if (!(p = get_varint(p, end, v))) return why = "truncated indices", nullptr;
        if (i > 0 && v >= uint64_t(INT64_MAX) - prev) return why = "index out of range", nullptr;
        const uint64_t cur = i == 0 ? v : prev + 1 + v;
        if (cur > uint64_t(INT64_MAX)) return why = "index out of range", nullptr;
        out[i] = int64_t(cur);
        prev = cur;
    }
    return p;
}

struct PredV1 {
    uint64_t generation = 0;
    int64_t tick = 0;
    std::vector<int64_t> idx;
    std::vector<uint64_t> vals;
};

// Decodes format-1 blocks of one segment (records of one stream refer to the previous record of
// the same stream in the same block).
class V1BlockParser {
public:
    V1BlockParser(const Selection& sel, const std::map<uint32_t, Registration>& fallback)
        : sel_(sel), fallback_(fallback) {}

    // False with `why` (and `unregistered` set for a record of an unregistered stream).
    bool parse(const uint8_t* p, const uint8_t* end, uint32_t n_records,
               const SegmentRegistry& reg, uint64_t block_pos, VecColumns& cols, uint64_t& decoded,
               std::string& why, bool& unregistered) {
        ++generation_;
        for (uint32_t r = 0; r < n_records; ++r) {
            uint64_t head, zt, n;
            if (!(p = get_varint(p, end, head))) return why = "truncated record head", false;
            if ((head >> 1) > 0xFFFFFFFFull) return why = "stream id out of range", false;
            const uint32_t sid = uint32_t(head >> 1);
            const bool same = head & 1;
            Registration fb;
            const Registration* info = lookup(sid, reg, block_pos);
            if (!info) {
                unregistered = true;
                unregistered_sid = sid;
                return why = "record of stream " + std::to_string(sid) + ", which has no registration", false;
            }
            if (!(p = get_varint(p, end, zt))) return why = "truncated tick", false;
            PredV1& pred = pred_of(sid);
            const bool has_pred = pred.generation == generation_;
            const int64_t tick = has_pred ? int64_t(uint64_t(pred.tick) + uint64_t(unzigzag(zt)))
                                          : unzigzag(zt);
            if (same) {
                if (!has_pred) return why = "same-indices flag without a predecessor", false;
                n = pred.idx.size();
            } else {
                if (!(p = get_varint(p, end, n))) return why = "truncated count", false;
                if (n > uint64_t(end - p)) return why = "count larger than the payload", false;
                idx_.resize(n);
                if (!(p = parse_indices(p, end, n, idx_.data(), why))) return false;
            }
            const std::vector<int64_t>& idx = same ? pred.idx : idx_;
            vals_.resize(n);
            uint64_t* vals = vals_.data();
            if (info->exact) {
                if (uint64_t(end - p) / 8 < n) return why = "truncated values", false;
                if (same) {
                    for (uint64_t i = 0; i < n; ++i, p += 8) vals[i] = get_u64(p) ^ pred.vals[i];
                } else {
                    for (uint64_t i = 0; i < n; ++i, p += 8) vals[i] = get_u64(p);
                }
            } else {
                const uint64_t* prev = pred.vals.data();
                for (uint64_t i = 0; i < n; ++i) {
                    uint64_t v;
                    if (!(p = get_varint(p, end, v))) return why = "truncated values", false;
                    vals[i] = same ? prev[i] + uint64_t(unzigzag(v)) : uint64_t(unzigzag(v));
                }
            }
            if (sel_.keep(sid)) {
                cols.stream_id.push_back(sid);
                cols.epoch.push_back(double(tick) * info->epoch_scale);
                cols.indices.insert(cols.indices.end(), idx.begin(), idx.end());
                const size_t base = cols.values.size();
                cols.values.resize(base + n);
                double* out = cols.values.data() + base;
                if (info->exact) {
                    if (n > 0) std::memcpy(out, vals, n * sizeof(double));
                } else {
                    const double scale = info->value_scale;
                    for (uint64_t i = 0; i < n; ++i) out[i] = double(int64_t(vals[i])) * scale;
                }
                cols.offsets.push_back(int64_t(cols.indices.size()));
                ++decoded;
            }
            pred.generation = generation_;
            pred.tick = tick;
            if (!same) pred.idx.swap(idx_);
            pred.vals.swap(vals_);
        }
        if (p != end) return why = "payload longer than its records", false;
        return true;
    }

    uint32_t unregistered_sid = 0;

private:
    const Registration* lookup(uint32_t sid, const SegmentRegistry& reg, uint64_t pos) {
        const StreamInfo* s = reg.find(sid, pos);
        if (s) return &s->reg;
        auto fb = fallback_.find(sid);
        return fb == fallback_.end() ? nullptr : &fb->second;
    }
    PredV1& pred_of(uint32_t sid) {
        if (sid >= (1u << 20)) return sparse_preds_[sid];
        if (sid >= preds_.size()) preds_.resize(size_t(sid) + 1);
        return preds_[sid];
    }

    const Selection& sel_;
    const std::map<uint32_t, Registration>& fallback_;
    uint64_t generation_ = 0;
    std::vector<PredV1> preds_;
    std::unordered_map<uint32_t, PredV1> sparse_preds_;
    std::vector<int64_t> idx_;
    std::vector<uint64_t> vals_;
};

// ---------------------------------------------------------------------------------------------
// Format-2 blocks: a job per block, sized before anything is decoded.

struct BlockJob {
    size_t segment = 0;
    uint64_t pos = 0;      // header frame offset
    uint64_t end = 0;      // end of its zstd frame
    BlockHeader header;
    const uint8_t* data = nullptr;  // the zstd frame
    // Output slot: records [rec0, rec0 + rec_cap), non-zeros [nnz0, nnz0 + nnz_cap).
    size_t rec0 = 0, nnz0 = 0, rec_cap = 0, nnz_cap = 0;
    bool skip = false;  // nothing selected in it: not decompressed, not reported
    // Results.
    bool ok = false;
    size_t rec_n = 0, nnz_n = 0;
    std::vector<SkipReport> reports;
    std::vector<uint32_t> unregistered;
};

// A segment as read: its bytes, format, registrations, reports and (format 1) records.
struct SegmentWork {
    std::string path;
    ByteBuffer data;
    SegmentFormat format = SegmentFormat::Empty;
    SegmentRegistry registry;
    std::vector<SkipReport> reports;
    SegmentSummary summary;
    std::vector<BlockJob> blocks;  // format 2
    VecColumns columns;            // formats 1 and 0.1.x
    std::vector<uint32_t> unregistered_v1;
    size_t rec0 = 0, nnz0 = 0;     // output slot of `columns`
    std::exception_ptr error;
};

// Per-thread state of the block decoders.
struct Worker {
    ZSTD_DCtx* dctx = nullptr;
    ByteBuffer raw;
    SectionScratch scratch;
    Worker() : dctx(ZSTD_createDCtx()) {
        if (!dctx) throw std::bad_alloc();
    }
    ~Worker() { ZSTD_freeDCtx(dctx); }
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
};

// Runs f(i, worker) for i in [0, n) on up to `threads` threads; the first exception is rethrown
// here, after every thread has stopped (none escapes its thread). A thread or worker that cannot
// be created (no memory for its stack, a process limit) only means fewer threads: the calling
// thread takes whatever the others do not, and every thread started is joined before returning.
template <class F>
void parallel_for(size_t n, unsigned threads, std::vector<std::unique_ptr<Worker>>& workers, F f) {
    threads = unsigned(std::max<size_t>(1, std::min<size_t>(threads, n)));
    if (workers.empty()) workers.push_back(std::make_unique<Worker>());  // the caller's own
    try {
        while (workers.size() < threads) workers.push_back(std::make_unique<Worker>());
    } catch (const std::bad_alloc&) {
        threads = unsigned(workers.size());
    }
    std::atomic<size_t> next{0};
    std::exception_ptr first_error;
    std::mutex error_mu;
    auto run = [&](unsigned w) {
        try {
            for (size_t i = next++; i < n; i = next++) f(i, *workers[w]);
        } catch (...) {
            std::lock_guard<std::mutex> lk(error_mu);
            if (!first_error) first_error = std::current_exception();
            next = n;
        }
    };
    if (threads == 1) {
        run(0);
    } else {
        std::vector<std::thread> pool;
        try {
            pool.reserve(threads - 1);
            for (unsigned t = 1; t < threads; ++t) pool.emplace_back(run, t);
        } catch (const std::exception&) {
            // Fewer threads than asked for; the ones started share the work with this one.
        }
        run(0);
        for (auto& t : pool) t.join();
    }
    if (first_error) std::rethrow_exception(first_error);
}

struct Directory {
    struct Entry {
        uint32_t sid;
        uint32_t records;
        uint64_t nnz;
        uint64_t bytes;
        uint64_t start;  // offset of the section in the payload
    };
    std::vector<Entry> entries;
};

// Parses and checks a block's directory (FORMAT.md section 5.1). `n` is what is available of the
// payload (all of it, or a prefix when only peeking); `complete` says it is all of it.
// Returns 1 when consistent, 0 when inconsistent, -1 when more of the payload is needed.
int parse_directory(const uint8_t* raw, size_t n, const BlockHeader& h, bool complete,
                    Directory& dir, std::string& why) {
    dir.entries.clear();
    const uint8_t* p = raw;
    const uint8_t* end = raw + n;
    uint64_t d;
    if (!(p = get_varint(p, end, d))) return complete ? (why = "truncated directory", 0) : -1;
    if (d != h.n_streams) return why = "directory size differs from the header", 0;
    if (d == 0) return why = "a block without any stream", 0;
    if (d > h.raw_size) return why = "directory larger than the payload", 0;
    dir.entries.reserve(size_t(d));
    uint64_t prev = 0, records = 0, nnz = 0, bytes = 0;
    for (uint64_t k = 0; k < d; ++k) {
        uint64_t gap, r, nz, b;
        if (!(p = get_varint(p, end, gap)) || !(p = get_varint(p, end, r)) ||
            !(p = get_varint(p, end, nz)) || !(p = get_varint(p, end, b))) {
            if (!complete) return -1;
            return why = "truncated directory", 0;
        }
        const uint64_t sid = k == 0 ? gap : prev + 1 + gap;
        if (gap > 0xFFFFFFFFull || sid > 0xFFFFFFFFull) return why = "stream id beyond 2^32", 0;
        if (sid < h.min_sid || sid > h.max_sid) return why = "stream id outside the header's range", 0;
        if (r == 0) return why = "a directory entry without records", 0;
        records += r;
        nnz += nz;
        bytes += b;
        if (records > h.n_records || nnz > h.nnz || bytes > h.raw_size)
            return why = "directory counts beyond the header's", 0;
        dir.entries.push_back({uint32_t(sid), uint32_t(r), nz, b, 0});
        prev = sid;
    }
    if (d > 0 && (dir.entries.front().sid != h.min_sid || dir.entries.back().sid != h.max_sid))
        return why = "directory does not span the header's stream id range", 0;
    if (records != h.n_records || nnz != h.nnz) return why = "directory counts differ from the header", 0;
    const uint64_t dir_size = uint64_t(p - raw);
    if (dir_size + bytes != h.raw_size) return why = "sections do not fill the payload", 0;
    uint64_t at = dir_size;
    for (auto& e : dir.entries) {
        e.start = at;
        at += e.bytes;
    }
    return 1;
}

// Reads just enough of a block to parse its directory (the directory is at the payload's start).
bool peek_directory(const BlockJob& job, Worker& w, Directory& dir) {
    const BlockHeader& h = job.header;
    if (h.raw_size > kMaxRawBlock) return false;
    if (crc32(job.data, h.compressed_size) != h.compressed_crc) return false;
    ZSTD_DCtx_reset(w.dctx, ZSTD_reset_session_only);
    ZSTD_inBuffer in{job.data, h.compressed_size, 0};
    size_t want = std::min<size_t>(h.raw_size, 64 << 10);
    w.raw.resize(std::max<size_t>(want, 1));
    size_t have = 0;
    std::string why;
    for (;;) {
        ZSTD_outBuffer out{w.raw.data(), want, have};
        while (out.pos < out.size) {
            const size_t r = ZSTD_decompressStream(w.dctx, &out, &in);
            if (ZSTD_isError(r)) return false;
            if (r == 0) break;  // frame complete
            if (in.pos == in.size && out.pos < out.size) break;
        }
        have = out.pos;
        const bool complete = have >= h.raw_size || in.pos == in.size;
        const int got = parse_directory(w.raw.data(), have, h, complete, dir, why);
        if (got >= 0) return got == 1;
        if (want >= h.raw_size) return false;
        want = std::min<size_t>(h.raw_size, want * 4);
        w.raw.resize(want);
    }
}

struct Output {
    uint32_t* stream_id;
    double* epoch;
    int32_t* offsets32;
    int64_t* offsets64;
    int64_t* indices;
    double* values;
};

// Decodes one format-2 block into its output slot (FORMAT.md sections 4, 5).
void decode_block_v2(BlockJob& job, const SegmentWork& seg, const Selection& sel,
                     const std::map<uint32_t, Registration>& fallback, const Output& out,
                     Worker& w) {
    const BlockHeader& h = job.header;
    auto bad = [&](const std::string& why) {
        job.ok = false;
        job.rec_n = job.nnz_n = 0;
        job.reports.push_back({seg.path, job.pos, job.end - job.pos, SkipKind::BadBlock,
                               "block " + std::to_string(h.block_seq) + " skipped: " + why});
    };
    if (h.raw_size > kMaxRawBlock) return bad("declared raw size beyond the format's bound");
    if (std::max<uint64_t>({h.n_records, h.nnz, h.n_streams}) > h.raw_size)
        return bad("counts larger than the raw size");
    if (crc32(job.data, h.compressed_size) != h.compressed_crc) return bad("checksum mismatch");
    if (!zstd_frame_is_exactly(job.data, h.compressed_size))
        return bad("the zstd frame is not exactly the declared compressed size");
    // Padding after the payload lets the section decoder read varints without a bounds check
    // per byte (it checks per run).
    w.raw.resize(size_t(h.raw_size) + kSectionPadding);
    const size_t got = ZSTD_decompressDCtx(w.dctx, w.raw.data(), h.raw_size, job.data, h.compressed_size);
    if (ZSTD_isError(got)) return bad(std::string("zstd: ") + ZSTD_getErrorName(got));
    if (got != h.raw_size) return bad("decompressed size differs from the header");
    std::memset(w.raw.data() + h.raw_size, 0, kSectionPadding);
    if (crc32(w.raw.data(), h.raw_size) != h.raw_crc)
        return bad("checksum of the decompressed payload mismatch");
    Directory dir;
    std::string why;
    if (parse_directory(w.raw.data(), h.raw_size, h, true, dir, why) != 1) return bad(why);
    job.ok = true;
    size_t rec = job.rec0, nnz = job.nnz0;
    const size_t rec_end = job.rec0 + job.rec_cap, nnz_end = job.nnz0 + job.nnz_cap;
    for (const auto& e : dir.entries) {
        if (!sel.keep(e.sid)) continue;
        const StreamInfo* info = seg.registry.find(e.sid, job.pos);
        const Registration* r = info ? &info->reg : nullptr;
        if (!r) {
            auto fb = fallback.find(e.sid);
            if (fb != fallback.end()) r = &fb->second;
        }
        if (!r) {
            job.unregistered.push_back(e.sid);
            continue;
        }
        if (rec + e.records > rec_end || nnz + e.nnz > nnz_end) {
            // Only a block whose directory disagrees with what was reserved for it gets here.
            job.reports.push_back({seg.path, job.pos, 0, SkipKind::BadSection,
                                   "section of stream " + std::to_string(e.sid) + " in block " +
                                       std::to_string(h.block_seq) + " does not fit its slot",
                                   e.sid});
            continue;
        }
        SectionTarget t{out.stream_id + rec, out.epoch + rec, nullptr, nullptr,
                        out.indices + nnz, out.values + nnz, int64_t(nnz)};
        if (out.offsets32) t.offsets32 = out.offsets32 + rec;
        else t.offsets64 = out.offsets64 + rec;
        const char* fail = decode_section(w.raw.data() + e.start, w.raw.data() + e.start + e.bytes,
                                          e.sid, e.records, e.nnz, *r, t, w.scratch);
        if (fail) {
            job.reports.push_back({seg.path, job.pos, 0, SkipKind::BadSection,
                                   "section of stream " + std::to_string(e.sid) + " in block " +
                                       std::to_string(h.block_seq) + " skipped: " + fail,
                                   e.sid});
            continue;
        }
        rec += e.records;
        nnz += e.nnz;
    }
    job.rec_n = rec - job.rec0;
    job.nnz_n = nnz - job.nnz0;
}

// ---------------------------------------------------------------------------------------------

// 0.1.x: one zstd frame per record batch; ticks are deltas across the whole directory.
class LegacyDecoder {
public:
    LegacyDecoder(const Selection& sel, const std::map<uint32_t, Registration>& fallback)
        : sel_(sel), fallback_(fallback), dctx_(ZSTD_createDCtx()) {
        if (!dctx_) throw std::bad_alloc();
    }
    ~LegacyDecoder() { ZSTD_freeDCtx(dctx_); }
    LegacyDecoder(const LegacyDecoder&) = delete;
    LegacyDecoder& operator=(const LegacyDecoder&) = delete;

    // False when a frame was damaged: the tick chain is broken for everything after it.
    bool decode(SegmentWork& seg, VecColumns& cols);

private:
    const Selection& sel_;
    const std::map<uint32_t, Registration>& fallback_;
    ZSTD_DCtx* dctx_;
    std::unordered_map<uint32_t, int64_t> last_tick_;
    std::vector<uint8_t> raw_;
    std::vector<int64_t> idx_;
    std::vector<uint64_t> vals_;
};

bool LegacyDecoder::decode(SegmentWork& seg, VecColumns& cols) {
    SegmentSummary& sum = seg.summary;
    sum.version = 0;
    const uint8_t* base = seg.data.data();
    const size_t size = seg.data.size();
    Reports rep{seg.path, seg.reports};
    std::unordered_set<uint32_t> reported;  // once per stream and segment
    size_t pos = 0;
    while (pos < size) {
        // 0.1.x wrote only standard zstd frames: anything else (a skippable frame included,
        // which zstd itself would accept) is damage.
        size_t fsize = 0;
        const FrameSize fs = zstd_frame_size(base + pos, size - pos, fsize);
        std::string why;
        bool ok = fs == FrameSize::Ok;
        const bool torn = fs == FrameSize::Truncated;
        if (!ok) why = torn ? "the file ends inside a zstd frame" : "not a zstd frame";
        unsigned long long content = 0;
        if (ok) {
            content = ZSTD_getFrameContentSize(base + pos, fsize);
            ok = content != ZSTD_CONTENTSIZE_UNKNOWN && content != ZSTD_CONTENTSIZE_ERROR &&
                 content <= kMaxRawBlock;
            if (!ok) why = "frame without a usable content size";
        }
        if (ok) {
            raw_.resize(size_t(content));
            const size_t got = ZSTD_decompressDCtx(dctx_, raw_.data(), size_t(content), base + pos, fsize);
            if (ZSTD_isError(got) || got != content) {
                ok = false;
                why = ZSTD_isError(got) ? std::string("zstd: ") + ZSTD_getErrorName(got)
                                        : "decompressed size differs from the frame header";
            }
        }
        // Parse the whole frame before touching the tick chains or the columns.
        struct Rec {
            uint32_t sid;
            int64_t tick;
            size_t a, n;
        };
        std::vector<Rec> recs;
        std::unordered_map<uint32_t, int64_t> ticks;
        idx_.clear();
        vals_.clear();
        const uint8_t* p = raw_.data();
        const uint8_t* end = p + (ok ? content : 0);
        while (ok && p < end) {
            uint64_t sid64, zt, n;
            if (!(p = get_varint(p, end, sid64)) || sid64 > 0xFFFFFFFFull) {
                ok = false;
                why = "bad stream id";
                break;
            }
            const uint32_t sid = uint32_t(sid64);
            if (!(p = get_varint(p, end, zt)) || !(p = get_varint(p, end, n)) || n > uint64_t(end - p)) {
                ok = false;
                why = "truncated record";
                break;
            }
            auto known = ticks.find(sid);
            auto prior = last_tick_.find(sid);
            int64_t tick = unzigzag(zt);
            if (known != ticks.end()) tick = int64_t(uint64_t(known->second) + uint64_t(tick));
            else if (prior != last_tick_.end()) tick = int64_t(uint64_t(prior->second) + uint64_t(tick));
            ticks[sid] = tick;
            const size_t a = idx_.size();
            idx_.resize(a + n);
            if (!(p = parse_indices(p, end, n, idx_.data() + a, why))) {
                ok = false;
                break;
            }
            for (uint64_t i = 0; i < n && ok; ++i) {
                uint64_t v;
                if (!(p = get_varint(p, end, v))) {
                    ok = false;
                    why = "truncated values";
                    break;
                }
                vals_.push_back(uint64_t(unzigzag(v)));
            }
            recs.push_back({sid, tick, a, size_t(n)});
        }
        if (!ok) {
            // 0.1.x epochs are deltas running across the whole directory: after a lost frame
            // no later epoch can be trusted, so the directory stops here.
            sum.torn = sum.torn || torn;
            rep.add(pos, size - pos, torn ? SkipKind::TornTail : SkipKind::CorruptFrame,
                    "0.1.x frame unreadable (" + why + "); rest of the segment skipped");
            ++sum.bad_blocks;
            return false;
        }
        for (const auto& kv : ticks) last_tick_[kv.first] = kv.second;
        for (const Rec& r : recs) {
            if (!sel_.keep(r.sid)) continue;
            auto fb = fallback_.find(r.sid);
            const Registration* reg = fb == fallback_.end() ? nullptr : &fb->second;
            if (!reg || reg->exact) {
                if (reported.insert(r.sid).second) {
                    char name[16];
                    std::snprintf(name, sizeof(name), "%08u", r.sid);
                    rep.add(pos, fsize, SkipKind::UnregisteredStream,
                            "0.1.x stream " + std::to_string(r.sid) + " has no usable sidecar streams/" +
                                name + ".json; its records skipped",
                            r.sid);
                }
                continue;
            }
            cols.stream_id.push_back(r.sid);
            cols.epoch.push_back(double(r.tick) * reg->epoch_scale);
            cols.indices.insert(cols.indices.end(), idx_.begin() + ptrdiff_t(r.a),
                                idx_.begin() + ptrdiff_t(r.a + r.n));
            for (size_t i = 0; i < r.n; ++i)
                cols.values.push_back(double(int64_t(vals_[r.a + i])) * reg->value_scale);
            cols.offsets.push_back(int64_t(cols.indices.size()));
            ++sum.records;
        }
        ++sum.blocks;
        pos += fsize;
    }
    return true;
}

// Walks a format-2 or format-1 segment: registrations, block jobs (format 2) or records (1).
void read_segment(SegmentWork& seg, const Selection& sel,
                  const std::map<uint32_t, Registration>& fallback, bool registrations_only,
                  ZSTD_DCtx* dctx) {
    SegmentSummary& sum = seg.summary;
    sum.path = seg.path;
    sum.bytes = seg.data.size();
    Reports rep{seg.path, seg.reports};
    std::string why;
    seg.format = detect_format(seg.data, why);
    if (seg.format == SegmentFormat::Empty) return;
    if (seg.format == SegmentFormat::Unsupported) {
        rep.add(0, seg.data.size(), SkipKind::UnsupportedVersion,
                seg.path + ": " + why + " is not supported by this version of disco-data-logger "
                "(it reads formats 2 and 1 and 0.1.x directories); upgrade the package");
        return;
    }
    if (seg.format == SegmentFormat::Legacy) return;  // decoded in order, by the caller
    // Unknown (no valid frame at all) walks as format 2: the whole file is reported.
    const int version = seg.format == SegmentFormat::V1 ? 1 : 2;
    sum.version = seg.format == SegmentFormat::Unknown ? -1 : version;
    std::vector<uint8_t> buf;
    V1BlockParser v1(sel, fallback);
    ByteBuffer raw;
    auto on_registration = [&](uint64_t pos, const uint8_t* payload, size_t psize) {
        if (version == 2) parse_registrations_v2(pos, payload, psize, dctx, buf, seg.registry, rep);
        else parse_registration_v1(pos, payload, psize, seg.registry, rep);
    };
    auto on_block = [&](uint64_t pos, const BlockHeader& h, const uint8_t* data, uint64_t end) {
        if (registrations_only) return;
        if (version == 2) {
            BlockJob job;
            job.pos = pos;
            job.end = end;
            job.header = h;
            job.data = data;
            seg.blocks.push_back(std::move(job));
            return;
        }
        std::string why;
        bool ok = h.raw_size <= kMaxRawBlock;
        if (!ok) why = "declared raw size beyond the format's bound";
        if (ok && crc32(data, h.compressed_size) != h.compressed_crc) {
            ok = false;
            why = "checksum mismatch";
        }
        if (ok && !zstd_frame_is_exactly(data, h.compressed_size)) {
            ok = false;
            why = "the zstd frame is not exactly the declared compressed size";
        }
        if (ok) {
            raw.resize(std::max<size_t>(h.raw_size, 1));
            const size_t got = ZSTD_decompressDCtx(dctx, raw.data(), h.raw_size, data, h.compressed_size);
            if (ZSTD_isError(got)) {
                ok = false;
                why = std::string("zstd: ") + ZSTD_getErrorName(got);
            } else if (got != h.raw_size) {
                ok = false;
                why = "decompressed size differs from the header";
            }
        }
        if (ok && crc32(raw.data(), h.raw_size) != h.raw_crc) {
            ok = false;
            why = "checksum of the decompressed payload mismatch";
        }
        bool unregistered = false;
        if (ok) {
            const size_t rec0 = seg.columns.records(), nnz0 = seg.columns.indices.size();
            uint64_t decoded = 0;
            ok = v1.parse(raw.data(), raw.data() + h.raw_size, h.n_records, seg.registry, pos,
                          seg.columns, decoded, why, unregistered);
            if (ok) {
                sum.records += decoded;
                ++sum.blocks;
            } else {
                seg.columns.rollback(rec0, nnz0);
            }
        }
        if (!ok) {
            ++sum.bad_blocks;
            if (unregistered) seg.unregistered_v1.push_back(v1.unregistered_sid);
            rep.add(pos, end - pos, unregistered ? SkipKind::UnregisteredStream : SkipKind::BadBlock,
                    "block " + std::to_string(h.block_seq) + " skipped: " + why,
                    unregistered ? int64_t(v1.unregistered_sid) : -1);
        }
    };
    walk_segment(seg.data.data(), seg.data.size(), version, rep, sum, on_registration, on_block);
}

// The first bytes of a file (up to n): how many were read, -1 if it cannot be read.
int file_head(const std::string& path, uint8_t* head, size_t n) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t got = 0;
    while (got < n) {
        const ssize_t r = ::read(fd, head + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            ::close(fd);
            return -1;
        }
        if (r == 0) break;
        got += size_t(r);
    }
    ::close(fd);
    return int(got);
}

uint64_t file_size(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? uint64_t(st.st_size) : 0;
}

unsigned thread_count(unsigned wanted) {
    return wanted ? wanted : std::max(1u, std::thread::hardware_concurrency());
}

// Registration of a stream as returned to the caller: a complete one (all labels resolved)
// beats an incomplete one; otherwise the later one in file order wins.
void keep_registration(std::map<uint32_t, StreamInfo>& out, const StreamInfo& info) {
    auto it = out.find(info.reg.stream_id);
    if (it == out.end()) {
        out.emplace(info.reg.stream_id, info);
        return;
    }
    if (info.unresolved > it->second.unresolved) return;
    it->second = info;
}

// Only the selected streams' registrations are returned: a query of one stream of a shard holding
// a million must not hand a million label sets to Python.
void collect_registrations(const SegmentWork& seg, const Selection& sel,
                           std::map<uint32_t, StreamInfo>& out) {
    for (const auto& info : seg.registry.infos)
        if (sel.keep(info->reg.stream_id)) keep_registration(out, *info);
}

std::string base_name(const std::string& path) {
    const size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

void sort_reports(std::vector<SkipReport>& reports) {
    std::stable_sort(reports.begin(), reports.end(),
                     [](const SkipReport& a, const SkipReport& b) { return a.offset < b.offset; });
}

}  // namespace

std::vector<std::string> list_segments(const std::string& dir) {
    std::vector<std::pair<unsigned long long, std::string>> found;
    DIR* d = ::opendir(dir.c_str());
    if (!d) {
        const int err = errno;
        throw FormatFailure("cannot read logger directory '" + dir + "': " + std::strerror(err));
    }
    while (dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        const std::string suffix = ".seg.zst";
        if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
            continue;
        const std::string stem = name.substr(0, name.size() - suffix.size());
        if (stem.empty() || stem.size() > 18 || !std::all_of(stem.begin(), stem.end(), ::isdigit)) continue;
        found.emplace_back(std::stoull(stem), dir + "/" + name);
    }
    ::closedir(d);
    std::sort(found.begin(), found.end());
    std::vector<std::string> out;
    for (auto& f : found) out.push_back(std::move(f.second));
    return out;
}

namespace {
// The segment files of `dir`, or only those named in `names` when it is not null.
std::vector<std::string> chosen_segments(const std::string& dir,
                                         const std::vector<std::string>* names) {
    std::vector<std::string> paths = list_segments(dir);
    if (names != nullptr) {
        const std::set<std::string> wanted(names->begin(), names->end());
        paths.erase(std::remove_if(paths.begin(), paths.end(),
                                   [&](const std::string& p) { return !wanted.count(base_name(p)); }),
                    paths.end());
    }
    return paths;
}
}  // namespace

DecodeResult decode_directory(const std::string& dir, const DecodeOptions& opts) {
    const Selection sel(opts);
    const std::vector<std::string> paths =
        chosen_segments(dir, opts.segment_filter ? &opts.segments : nullptr);
    const size_t n = paths.size();
    const unsigned threads = thread_count(opts.threads);
    std::vector<std::unique_ptr<Worker>> workers;
    std::vector<SegmentWork> segs(n);
    for (size_t i = 0; i < n; ++i) segs[i].path = paths[i];
    DecodeResult result;

    // Phase 1. 0.1.x segments are decoded here, in order: their ticks are deltas that run across
    // segments, so one is read only while the chain before it is unbroken (FORMAT.md section 9).
    // The other segments are read, walked (registrations parsed, block headers collected) and,
    // for format 1, decoded after that, in parallel.
    {
        LegacyDecoder dec(sel, opts.fallback);
        std::vector<size_t> others;
        bool broken = false, seen_legacy = false;
        for (size_t i = 0; i < n; ++i) {
            SegmentWork& seg = segs[i];
            seg.summary.path = seg.path;
            uint8_t head[12];
            const int got = file_head(seg.path, head, sizeof(head));
            const bool legacy = got >= 4 && get_u32(head) == kZstdMagic;
            const bool shows_ddl = got >= 12 && get_u32(head) == kSkippableMagic &&
                                   (std::memcmp(head + 8, "DDL2", 4) == 0 ||
                                    std::memcmp(head + 8, "DDL1", 4) == 0);
            if (broken && (legacy || (seen_legacy && got > 0 && !shows_ddl))) {
                seg.reports.push_back({seg.path, 0, file_size(seg.path), SkipKind::LegacyChainBroken,
                                       "not read: an earlier 0.1.x segment is damaged and 0.1.x "
                                       "epochs are deltas that run across segments"});
                continue;
            }
            seen_legacy = seen_legacy || legacy;
            if (!legacy) {
                others.push_back(i);
                // Any later 0.1.x segment would start its tick chains from unknown values.
                if (got != 0) broken = true;
                continue;
            }
            std::string err;
            if (!read_file(seg.path, seg.data, err)) {
                seg.reports.push_back({seg.path, 0, file_size(seg.path), SkipKind::UnreadableFile,
                                       "cannot read: " + err});
                broken = true;
                continue;
            }
            seg.summary.bytes = seg.data.size();
            broken = !dec.decode(seg, seg.columns) || broken;
            seg.data = ByteBuffer();
        }
        parallel_for(others.size(), threads, workers, [&](size_t k, Worker& w) {
            SegmentWork& seg = segs[others[k]];
            std::string err;
            if (!read_file(seg.path, seg.data, err)) {
                seg.reports.push_back({seg.path, 0, file_size(seg.path), SkipKind::UnreadableFile,
                                       "cannot read: " + err});
                return;
            }
            read_segment(seg, sel, opts.fallback, false, w.dctx);
        });
    }

    // Phase 2: size the output. Format-2 blocks reserve what their headers (or, with a
    // selection, their directories) declare; the others what they decoded.
    std::vector<BlockJob*> jobs;
    for (auto& seg : segs)
        for (auto& b : seg.blocks) {
            // FORMAT.md 2.2: a block whose stream id range holds no selected stream is skipped
            // unchecked.
            if (!sel.any_in(b.header.min_sid, b.header.max_sid)) b.skip = true;
            jobs.push_back(&b);
        }
    if (sel.active()) {
        parallel_for(jobs.size(), threads, workers, [&](size_t i, Worker& w) {
            BlockJob& b = *jobs[i];
            if (b.skip) return;
            Directory dir;
            if (!peek_directory(b, w, dir)) {
                b.rec_cap = b.nnz_cap = 0;  // decoded anyway, to report why
                return;
            }
            size_t r = 0, z = 0;
            for (const auto& e : dir.entries)
                if (sel.keep(e.sid)) {
                    r += e.records;
                    z += size_t(e.nnz);
                }
            b.rec_cap = r;
            b.nnz_cap = z;
        });
    } else {
        for (BlockJob* b : jobs) {
            const bool sane = b->header.raw_size <= kMaxRawBlock &&
                              b->header.n_records <= b->header.raw_size && b->header.nnz <= b->header.raw_size;
            b->rec_cap = sane ? b->header.n_records : 0;
            b->nnz_cap = sane ? size_t(b->header.nnz) : 0;
        }
    }
    size_t total_rec = 0, total_nnz = 0;
    for (auto& seg : segs) {
        seg.rec0 = total_rec;
        seg.nnz0 = total_nnz;
        total_rec += seg.columns.records();
        total_nnz += seg.columns.indices.size();
        for (auto& b : seg.blocks) {
            if (b.skip) continue;
            b.rec0 = total_rec;
            b.nnz0 = total_nnz;
            total_rec += b.rec_cap;
            total_nnz += b.nnz_cap;
        }
    }
    result.large_offsets = total_nnz > size_t(INT32_MAX);
    result.stream_id.allocate(total_rec);
    result.epoch.allocate(total_rec);
    if (result.large_offsets) result.offsets64.allocate(total_rec + 1);
    else result.offsets32.allocate(total_rec + 1);
    result.indices.allocate(total_nnz);
    result.values.allocate(total_nnz);
    const Output out{result.stream_id.data(), result.epoch.data(),
                     result.large_offsets ? nullptr : result.offsets32.data(),
                     result.large_offsets ? result.offsets64.data() : nullptr,
                     result.indices.data(), result.values.data()};

    // Phase 3, in parallel: every format-2 block straight into its slot; the other segments'
    // columns copied into theirs.
    struct Task {
        SegmentWork* seg;
        BlockJob* block;
    };
    std::vector<Task> tasks;
    for (auto& seg : segs) {
        if (seg.columns.records()) tasks.push_back({&seg, nullptr});
        for (auto& b : seg.blocks)
            if (!b.skip) tasks.push_back({&seg, &b});
    }
    parallel_for(tasks.size(), threads, workers, [&](size_t i, Worker& w) {
        Task& t = tasks[i];
        if (t.block) {
            decode_block_v2(*t.block, *t.seg, sel, opts.fallback, out, w);
            return;
        }
        const VecColumns& c = t.seg->columns;
        const size_t r0 = t.seg->rec0, z0 = t.seg->nnz0, nr = c.records(), nz = c.indices.size();
        std::memcpy(out.stream_id + r0, c.stream_id.data(), nr * sizeof(uint32_t));
        std::memcpy(out.epoch + r0, c.epoch.data(), nr * sizeof(double));
        for (size_t k = 0; k < nr; ++k) {
            const int64_t o = int64_t(z0) + c.offsets[k];
            if (out.offsets32) out.offsets32[r0 + k] = int32_t(o);
            else out.offsets64[r0 + k] = o;
        }
        if (nz) {
            std::memcpy(out.indices + z0, c.indices.data(), nz * sizeof(int64_t));
            std::memcpy(out.values + z0, c.values.data(), nz * sizeof(double));
        }
    });

    // Phase 4: close the gaps left by blocks and sections that were skipped, in file order.
    size_t rec_w = 0, nnz_w = 0;
    auto settle = [&](size_t rec0, size_t rec_n, size_t nnz0, size_t nnz_n) {
        if (rec0 != rec_w || nnz0 != nnz_w) {
            const int64_t shift = int64_t(nnz0) - int64_t(nnz_w);
            std::memmove(out.stream_id + rec_w, out.stream_id + rec0, rec_n * sizeof(uint32_t));
            std::memmove(out.epoch + rec_w, out.epoch + rec0, rec_n * sizeof(double));
            for (size_t k = 0; k < rec_n; ++k) {
                if (out.offsets32) out.offsets32[rec_w + k] = int32_t(out.offsets32[rec0 + k] - shift);
                else out.offsets64[rec_w + k] = out.offsets64[rec0 + k] - shift;
            }
            std::memmove(out.indices + nnz_w, out.indices + nnz0, nnz_n * sizeof(int64_t));
            std::memmove(out.values + nnz_w, out.values + nnz0, nnz_n * sizeof(double));
        }
        rec_w += rec_n;
        nnz_w += nnz_n;
    };
    for (auto& seg : segs) {
        if (seg.columns.records())
            settle(seg.rec0, seg.columns.records(), seg.nnz0, seg.columns.indices.size());
        for (auto& b : seg.blocks)
            if (!b.skip) settle(b.rec0, b.rec_n, b.nnz0, b.nnz_n);
    }
    if (out.offsets32) out.offsets32[rec_w] = int32_t(nnz_w);
    else out.offsets64[rec_w] = int64_t(nnz_w);
    result.stream_id.shrink(rec_w);
    result.epoch.shrink(rec_w);
    if (out.offsets32) result.offsets32.shrink(rec_w + 1);
    else result.offsets64.shrink(rec_w + 1);
    result.indices.shrink(nnz_w);
    result.values.shrink(nnz_w);

    // Reports, summaries and registrations, segment by segment in file order.
    std::set<uint32_t> unregistered;
    for (auto& seg : segs) {
        SegmentSummary& sum = seg.summary;
        sum.path = seg.path;
        std::unordered_set<uint32_t> reported;
        for (auto& b : seg.blocks) {
            if (b.skip) continue;
            if (b.ok) {
                ++sum.blocks;
                sum.records += b.rec_n;
            } else {
                ++sum.bad_blocks;
            }
            for (auto& r : b.reports) seg.reports.push_back(std::move(r));
            for (uint32_t sid : b.unregistered) {
                unregistered.insert(sid);
                if (reported.insert(sid).second)
                    seg.reports.push_back({seg.path, b.pos, 0, SkipKind::UnregisteredStream,
                                           "stream " + std::to_string(sid) +
                                               " has no registration in this segment (nor a sidecar); "
                                               "its records are skipped",
                                           sid});
            }
        }
        for (uint32_t sid : seg.unregistered_v1) unregistered.insert(sid);
        sort_reports(seg.reports);
        for (auto& r : seg.reports) result.skipped.push_back(std::move(r));
        if (opts.registrations) collect_registrations(seg, sel, result.registrations);
        if (!seg.path.empty()) result.segments.push_back(sum);
    }
    result.unregistered.assign(unregistered.begin(), unregistered.end());
    return result;
}

RegistrationsResult read_registrations(const std::string& dir,
                                       const std::vector<std::string>* segments) {
    const std::vector<std::string> paths = chosen_segments(dir, segments);
    std::vector<SegmentWork> segs(paths.size());
    std::vector<std::unique_ptr<Worker>> workers;
    const DecodeOptions none;
    const Selection sel(none);
    parallel_for(paths.size(), thread_count(0), workers, [&](size_t i, Worker& w) {
        SegmentWork& seg = segs[i];
        seg.path = paths[i];
        std::string err;
        if (!read_file(seg.path, seg.data, err)) {
            seg.reports.push_back({seg.path, 0, 0, SkipKind::UnreadableFile, "cannot read: " + err});
            return;
        }
        read_segment(seg, sel, none.fallback, true, w.dctx);
        seg.data.clear();
        seg.data.shrink_to_fit();
    });
    RegistrationsResult out;
    for (auto& seg : segs) {
        collect_registrations(seg, sel, out.registrations);
        for (auto& r : seg.reports)
            if (r.kind != SkipKind::BadBlock) out.skipped.push_back(std::move(r));
    }
    return out;
}

}  // namespace ddl
