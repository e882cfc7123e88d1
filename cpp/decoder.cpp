#include "decoder.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <unordered_map>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "crc32.hpp"
#include "errors.hpp"

namespace ddl {

namespace {

constexpr uint32_t kMaxFramePayload = kMaxJson + 64;

bool read_file(const std::string& path, std::vector<uint8_t>& out, std::string& err) {
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

struct StreamFilter {
    std::vector<char> keep;
    bool active = false;
    explicit StreamFilter(const DecodeOptions& o) : active(o.filter) {
        for (uint32_t s : o.stream_ids) {
            if (s >= keep.size()) keep.resize(size_t(s) + 1, 0);
            keep[s] = 1;
        }
    }
    bool operator()(uint32_t sid) const { return !active || (sid < keep.size() && keep[sid]); }
};

struct Pred {
    uint64_t generation = 0;
    int64_t tick = 0;
    std::vector<int64_t> idx;
    std::vector<uint64_t> vals;
};

// Everything one segment needs while it is decoded; one per thread.
class SegmentDecoder {
public:
    SegmentDecoder(const DecodeOptions& opts, const StreamFilter& filter)
        : opts_(opts), filter_(filter), dctx_(ZSTD_createDCtx()) {}
    ~SegmentDecoder() { ZSTD_freeDCtx(dctx_); }

    void decode_v1(const std::string& path, const std::vector<uint8_t>& data, DecodeResult& out);
    // 0.1.x: `last_tick` carries on across the segments of a directory. False when a frame was
    // damaged: the tick chain is broken for everything after it.
    bool decode_legacy(const std::string& path, const std::vector<uint8_t>& data,
                       std::unordered_map<uint32_t, int64_t>& last_tick, DecodeResult& out);

private:
    // Per-record lookups go through dense tables for the usual small stream ids; ids beyond
    // kDense (possible only in hostile or corrupt files) fall back to the maps.
    static constexpr uint32_t kDense = 1u << 20;

    const RegistrationInfo* find_registration(uint32_t sid) const {
        auto it = regs_.find(sid);
        if (it != regs_.end()) return &it->second;
        auto fb = opts_.fallback.find(sid);
        return fb == opts_.fallback.end() ? nullptr : &fb->second;
    }
    const RegistrationInfo* lookup(uint32_t sid) {
        if (sid >= kDense) return find_registration(sid);
        if (sid >= reg_cache_.size()) reg_cache_.resize(size_t(sid) + 1, nullptr);
        const RegistrationInfo*& slot = reg_cache_[sid];
        if (!slot) slot = find_registration(sid);
        return slot;
    }
    void add_registration(const RegistrationInfo& r) {
        regs_[r.stream_id] = r;
        reg_cache_.clear();  // std::map nodes are stable, but a new entry may shadow a fallback
    }
    Pred& pred_of(uint32_t sid) {
        if (sid >= kDense) return sparse_preds_[sid];
        if (sid >= preds_.size()) preds_.resize(size_t(sid) + 1);
        return preds_[sid];
    }
    bool parse_block(const uint8_t* p, const uint8_t* end, uint32_t n_records,
                     DecodedColumns& cols, uint64_t& decoded, std::string& why);
    bool decompress(const uint8_t* src, size_t n, size_t raw_size, std::string& why);

    const DecodeOptions& opts_;
    const StreamFilter& filter_;
    ZSTD_DCtx* dctx_;
    std::map<uint32_t, RegistrationInfo> regs_;
    std::vector<const RegistrationInfo*> reg_cache_;
    std::set<uint32_t> unregistered_;  // reported in DecodeResult::unregistered
    std::vector<Pred> preds_;
    std::unordered_map<uint32_t, Pred> sparse_preds_;
    uint64_t generation_ = 0;
    std::vector<uint8_t> raw_;
    std::vector<int64_t> idx_;
    std::vector<uint64_t> vals_;
};

// Reads n indices stored as first value + gaps (FORMAT.md section 4) into out[0..n). Returns the
// position after them, or nullptr with `why` set on truncation or an out-of-range index.
const uint8_t* parse_indices(const uint8_t* p, const uint8_t* end, uint64_t n, int64_t* out,
                             std::string& why) {
    uint64_t prev = 0;
    for (uint64_t i = 0; i < n; ++i) {
        uint64_t v;
        if (!(p = get_varint(p, end, v))) return why = "truncated indices", nullptr;
        const uint64_t cur = i == 0 ? v : prev + 1 + v;
        if (cur > uint64_t(INT64_MAX) || (i > 0 && cur <= prev))
            return why = "index out of range", nullptr;
        out[i] = int64_t(cur);
        prev = cur;
    }
    return p;
}

void rollback(DecodedColumns& c, size_t records, size_t nnz) {
    c.stream_id.resize(records);
    c.epoch.resize(records);
    c.offsets.resize(records + 1);
    c.indices.resize(nnz);
    c.values.resize(nnz);
}

bool SegmentDecoder::decompress(const uint8_t* src, size_t n, size_t raw_size, std::string& why) {
    raw_.resize(raw_size);
    const size_t got = ZSTD_decompressDCtx(dctx_, raw_.data(), raw_size, src, n);
    if (ZSTD_isError(got)) {
        why = std::string("zstd: ") + ZSTD_getErrorName(got);
        return false;
    }
    if (got != raw_size) {
        why = "decompressed size differs from the header";
        return false;
    }
    return true;
}

bool SegmentDecoder::parse_block(const uint8_t* p, const uint8_t* end, uint32_t n_records,
                                 DecodedColumns& cols, uint64_t& decoded, std::string& why) {
    ++generation_;
    for (uint32_t r = 0; r < n_records; ++r) {
        uint64_t head, zt, n;
        if (!(p = get_varint(p, end, head))) return why = "truncated record head", false;
        if ((head >> 1) > 0xFFFFFFFFull) return why = "stream id out of range", false;
        const uint32_t sid = uint32_t(head >> 1);
        const bool same = head & 1;
        const RegistrationInfo* reg = lookup(sid);
        if (!reg) {
            unregistered_.insert(sid);
            return why = "record of unregistered stream " + std::to_string(sid), false;
        }
        if (!(p = get_varint(p, end, zt))) return why = "truncated tick", false;
        Pred& pred = pred_of(sid);
        const bool has_pred = pred.generation == generation_;
        const int64_t tick = has_pred ? int64_t(uint64_t(pred.tick) + uint64_t(unzigzag(zt)))
                                      : unzigzag(zt);
        if (same) {
            if (!has_pred) return why = "same-indices flag without a predecessor", false;
            n = pred.idx.size();
        } else {
            if (!(p = get_varint(p, end, n))) return why = "truncated count", false;
            // Every index takes at least one byte: bounds the allocation by the payload size.
            if (n > uint64_t(end - p)) return why = "count larger than the payload", false;
            idx_.resize(n);
            if (!(p = parse_indices(p, end, n, idx_.data(), why))) return false;
        }
        const std::vector<int64_t>& idx = same ? pred.idx : idx_;
        vals_.resize(n);
        uint64_t* vals = vals_.data();
        if (reg->exact) {
            if (uint64_t(end - p) < n * 8) return why = "truncated values", false;
            if (same) {
                for (uint64_t i = 0; i < n; ++i, p += 8) vals[i] = get_u64(p) ^ pred.vals[i];
            } else {
                for (uint64_t i = 0; i < n; ++i, p += 8) vals[i] = get_u64(p);
            }
        } else if (same) {
            const uint64_t* prev = pred.vals.data();
            for (uint64_t i = 0; i < n; ++i) {
                uint64_t v;
                if (!(p = get_varint(p, end, v))) return why = "truncated values", false;
                vals[i] = prev[i] + uint64_t(unzigzag(v));
            }
        } else {
            for (uint64_t i = 0; i < n; ++i) {
                uint64_t v;
                if (!(p = get_varint(p, end, v))) return why = "truncated values", false;
                vals[i] = uint64_t(unzigzag(v));
            }
        }
        if (filter_(sid)) {
            cols.stream_id.push_back(sid);
            cols.epoch.push_back(double(tick) * reg->epoch_scale);
            cols.indices.insert(cols.indices.end(), idx.begin(), idx.end());
            const size_t base = cols.values.size();
            cols.values.resize(base + n);
            double* out = cols.values.data() + base;
            const uint64_t* v = vals_.data();
            if (reg->exact) {
                if (n > 0) std::memcpy(out, v, n * sizeof(double));
            } else {
                const double scale = reg->value_scale;
                for (uint64_t i = 0; i < n; ++i) out[i] = double(int64_t(v[i])) * scale;
            }
            cols.offsets.push_back(int64_t(cols.indices.size()));
        }
        ++decoded;
        pred.generation = generation_;
        pred.tick = tick;
        if (!same) pred.idx.swap(idx_);  // buffers trade places: no copy, no allocation
        pred.vals.swap(vals_);
    }
    if (p != end) return why = "payload longer than its records", false;
    return true;
}

// How many non-zeros to reserve the columns for, so they are allocated once. Every value takes
// at least one raw byte, so the raw sizes of the (checksum-valid) block headers bound the
// non-zeros; files hold 1-3 non-zeros per byte in practice, so the bound is capped at 3x the
// file size: a forged header cannot reserve gigabytes, and a denser file just grows its vectors.
size_t reserve_nonzeros(const std::vector<uint8_t>& data) {
    size_t pos = 0, total = 0;
    const uint8_t* base = data.data();
    while (data.size() - pos >= kFrameHead + kBlockHeaderPayload) {
        if (get_u32(base + pos) != kSkippableMagic) break;
        const uint32_t psize = get_u32(base + pos + 4);
        if (psize > kMaxFramePayload || data.size() - pos - kFrameHead < psize) break;
        const uint8_t* payload = base + pos + kFrameHead;
        uint8_t kind = 0;
        if (!payload_valid(payload, psize, kind)) break;
        size_t next = pos + kFrameHead + psize;
        if (kind == kKindBlockHeader) {
            const BlockHeader h = parse_block_header(payload);
            total += std::min<size_t>(h.raw_size, kMaxRawBlock);
            next += h.compressed_size;
        }
        if (next > data.size()) break;
        pos = next;
    }
    return std::min(total, 3 * data.size());
}

void SegmentDecoder::decode_v1(const std::string& path, const std::vector<uint8_t>& data,
                               DecodeResult& out) {
    out.parts.emplace_back();
    DecodedColumns& part = out.parts.back();
    const size_t nnz = reserve_nonzeros(data);
    const size_t records = std::min(nnz / 2, data.size());  // a record takes >= 2 raw bytes
    part.indices.reserve(nnz);
    part.values.reserve(nnz);
    part.stream_id.reserve(records);
    part.epoch.reserve(records);
    part.offsets.reserve(records + 1);
    SegmentSummary sum;
    sum.path = path;
    sum.bytes = data.size();
    const uint8_t* base = data.data();
    const size_t size = data.size();
    size_t pos = 0;
    bool first = true;
    auto stop = [&](const std::string& reason, bool torn) {
        out.skipped.push_back({path, pos, size - pos, reason});
        sum.torn = sum.torn || torn;
    };
    while (pos < size) {
        if (size - pos < kFrameHead) {
            stop("torn tail: the file ends inside a frame header", true);
            break;
        }
        const uint32_t magic = get_u32(base + pos);
        const uint32_t psize = get_u32(base + pos + 4);
        if (magic != kSkippableMagic) {
            stop("unexpected data where a frame header should be (corrupt segment)", false);
            break;
        }
        if (psize > kMaxFramePayload) {
            stop("frame header declares an implausible size (corrupt segment)", false);
            break;
        }
        if (size - pos - kFrameHead < psize) {
            stop("torn tail: the file ends inside a frame", true);
            break;
        }
        const uint8_t* payload = base + pos + kFrameHead;
        uint8_t kind = 0;
        if (!payload_valid(payload, psize, kind)) {
            const bool known = psize >= 5 && std::memcmp(payload, "DDL1", 4) == 0 &&
                               payload[4] >= kKindSegmentHeader && payload[4] <= kKindSegmentFooter;
            stop(known ? "frame checksum or size mismatch (corrupt segment)"
                       : "unknown frame (not a format 1 frame, or corrupt)", false);
            break;
        }
        if (first != (kind == kKindSegmentHeader)) {
            stop(first ? "segment does not start with a segment header" : "second segment header",
                 false);
            break;
        }
        first = false;
        if (kind == kKindSegmentHeader) {
            if (payload[5] != kFormatVersion)
                throw FormatFailure(path + ": format version " + std::to_string(payload[5]) +
                                    " is not supported by this version of disco-data-logger "
                                    "(it reads version " + std::to_string(kFormatVersion) +
                                    "); upgrade the package");
            pos += kFrameHead + psize;
            continue;
        }
        if (kind == kKindRegistration) {
            RegistrationInfo r = parse_registration(payload);
            const bool scales_ok = std::isfinite(r.epoch_scale) && r.epoch_scale > 0 &&
                                   (r.exact || (std::isfinite(r.value_scale) && r.value_scale > 0));
            if (scales_ok) {
                add_registration(r);
                out.registrations[r.stream_id] = std::move(r);
            } else {
                out.skipped.push_back({path, pos, kFrameHead + psize,
                                       "registration of stream " + std::to_string(r.stream_id) +
                                           " has invalid scales; ignored"});
            }
            pos += kFrameHead + psize;
            continue;
        }
        if (kind == kKindSegmentFooter) {
            sum.has_footer = true;
            pos += kFrameHead + psize;
            if (pos < size) {  // the footer is the last frame (FORMAT.md section 2)
                stop("data after the segment footer; rest of the segment skipped", false);
                break;
            }
            continue;
        }
        const BlockHeader h = parse_block_header(payload);
        const size_t data_start = pos + kFrameHead + psize;
        if (size - data_start < h.compressed_size) {
            stop("torn tail: the file ends inside block " + std::to_string(h.block_seq), true);
            break;
        }
        const uint8_t* comp = base + data_start;
        const size_t next = data_start + h.compressed_size;
        std::string why;
        bool ok = h.raw_size <= kMaxRawBlock;
        if (!ok) why = "declared raw size beyond the format's bound";
        if (ok && crc32(comp, h.compressed_size) != h.compressed_crc) {
            ok = false;
            why = "checksum mismatch";
        }
        if (ok) ok = decompress(comp, h.compressed_size, h.raw_size, why);
        if (ok && crc32(raw_.data(), h.raw_size) != h.raw_crc) {
            ok = false;
            why = "checksum of the decompressed payload mismatch";
        }
        if (ok) {
            DecodedColumns& c = part;
            const size_t rec0 = c.records(), nnz0 = c.indices.size();
            uint64_t decoded = 0;
            ok = parse_block(raw_.data(), raw_.data() + h.raw_size, h.n_records, c, decoded, why);
            if (ok) {
                sum.records += decoded;
                ++sum.blocks;
            } else {
                rollback(c, rec0, nnz0);
            }
        }
        if (!ok) {
            ++sum.bad_blocks;
            out.skipped.push_back({path, pos, next - pos,
                                   "block " + std::to_string(h.block_seq) + " skipped: " + why});
        }
        pos = next;
    }
    if (first && size > 0 && out.skipped.empty())
        out.skipped.push_back({path, 0, size, "no segment header"});
    out.unregistered.insert(out.unregistered.end(), unregistered_.begin(), unregistered_.end());
    unregistered_.clear();
    out.segments.push_back(sum);
}

bool SegmentDecoder::decode_legacy(const std::string& path, const std::vector<uint8_t>& data,
                                   std::unordered_map<uint32_t, int64_t>& last_tick,
                                   DecodeResult& out) {
    SegmentSummary sum;
    sum.path = path;
    sum.legacy = true;
    sum.bytes = data.size();
    const uint8_t* base = data.data();
    const size_t size = data.size();
    size_t pos = 0;
    if (out.parts.empty()) out.parts.emplace_back();
    DecodedColumns& cols = out.parts.back();
    std::vector<uint32_t> unknown_reported;
    bool intact = true;
    while (pos < size) {
        // 0.1.x wrote only standard zstd frames: anything else (a skippable frame included,
        // which zstd itself would accept) is damage.
        const bool zstd_head = size - pos >= 4 && get_u32(base + pos) == kZstdMagic;
        const size_t fsize =
            zstd_head ? ZSTD_findFrameCompressedSize(base + pos, size - pos) : size_t(-1);
        std::string why;
        bool ok = zstd_head && !ZSTD_isError(fsize);
        if (!ok) {
            sum.torn = size - pos < 8 || get_u32(base + pos) == kZstdMagic;
            why = sum.torn ? "the file ends inside a zstd frame" : "not a zstd frame";
        }
        unsigned long long content = 0;
        if (ok) {
            content = ZSTD_getFrameContentSize(base + pos, fsize);
            ok = content != ZSTD_CONTENTSIZE_UNKNOWN && content != ZSTD_CONTENTSIZE_ERROR &&
                 content <= kMaxRawBlock;
            if (!ok) why = "frame without a usable content size";
        }
        if (ok) ok = decompress(base + pos, fsize, size_t(content), why);
        // Parse the whole frame before touching the tick chains or the columns.
        struct Rec { uint32_t sid; int64_t tick; size_t a, n; };
        std::vector<Rec> recs;
        std::unordered_map<uint32_t, int64_t> ticks;
        idx_.clear();
        vals_.clear();
        const uint8_t* p = raw_.data();
        const uint8_t* end = p + (ok ? content : 0);
        while (ok && p < end) {
            uint64_t sid64, zt, n;
            if (!(p = get_varint(p, end, sid64)) || sid64 > 0xFFFFFFFFull) { ok = false; why = "bad stream id"; break; }
            const uint32_t sid = uint32_t(sid64);
            if (!(p = get_varint(p, end, zt)) || !(p = get_varint(p, end, n)) || n > uint64_t(end - p)) {
                ok = false;
                why = "truncated record";
                break;
            }
            auto known = ticks.find(sid);
            auto prior = last_tick.find(sid);
            int64_t tick = unzigzag(zt);
            if (known != ticks.end()) tick = int64_t(uint64_t(known->second) + uint64_t(tick));
            else if (prior != last_tick.end()) tick = int64_t(uint64_t(prior->second) + uint64_t(tick));
            ticks[sid] = tick;
            const size_t a = idx_.size();
            idx_.resize(a + n);
            if (!(p = parse_indices(p, end, n, idx_.data() + a, why))) {
                ok = false;
                break;
            }
            for (uint64_t i = 0; i < n && ok; ++i) {
                uint64_t v;
                if (!(p = get_varint(p, end, v))) { ok = false; why = "truncated values"; break; }
                vals_.push_back(uint64_t(unzigzag(v)));
            }
            recs.push_back({sid, tick, a, size_t(n)});
        }
        if (!ok) {
            // 0.1.x epochs are deltas running across the whole directory: after a lost frame
            // no later epoch can be trusted, so the directory stops here.
            out.skipped.push_back({path, pos, size - pos,
                                   "0.1.x frame unreadable (" + why + "); rest of the segment skipped"});
            ++sum.bad_blocks;
            intact = false;
            break;
        }
        for (const auto& kv : ticks) last_tick[kv.first] = kv.second;
        for (const Rec& r : recs) {
            const RegistrationInfo* reg = lookup(r.sid);
            if (!reg || reg->exact) {
                if (std::find(unknown_reported.begin(), unknown_reported.end(), r.sid) == unknown_reported.end()) {
                    unknown_reported.push_back(r.sid);
                    char name[16];
                    std::snprintf(name, sizeof(name), "%08u", r.sid);
                    out.skipped.push_back({path, pos, 0,
                                           "0.1.x stream " + std::to_string(r.sid) +
                                               " has no usable sidecar streams/" + name +
                                               ".json; its records skipped"});
                }
                continue;
            }
            if (!filter_(r.sid)) continue;
            cols.stream_id.push_back(r.sid);
            cols.epoch.push_back(double(r.tick) * reg->epoch_scale);
            cols.indices.insert(cols.indices.end(), idx_.begin() + ptrdiff_t(r.a),
                                idx_.begin() + ptrdiff_t(r.a + r.n));
            for (size_t i = 0; i < r.n; ++i)
                cols.values.push_back(double(int64_t(vals_[r.a + i])) * reg->value_scale);
            cols.offsets.push_back(int64_t(cols.indices.size()));
        }
        sum.records += recs.size();
        ++sum.blocks;
        pos += fsize;
    }
    out.segments.push_back(sum);
    return intact;
}

bool is_legacy(const std::vector<uint8_t>& data) {
    return data.size() >= 4 && get_u32(data.data()) == kZstdMagic;
}

bool file_is_legacy(const std::string& path) {
    uint8_t head[4];
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const ssize_t r = ::read(fd, head, 4);
    ::close(fd);
    return r == 4 && get_u32(head) == kZstdMagic;
}

void merge_result(DecodeResult& dst, DecodeResult&& src) {
    for (auto& p : src.parts) dst.parts.push_back(std::move(p));
    for (auto& kv : src.registrations) dst.registrations[kv.first] = std::move(kv.second);
    dst.skipped.insert(dst.skipped.end(), src.skipped.begin(), src.skipped.end());
    dst.segments.insert(dst.segments.end(), src.segments.begin(), src.segments.end());
    dst.unregistered.insert(dst.unregistered.end(), src.unregistered.begin(), src.unregistered.end());
}

}  // namespace

std::vector<std::string> list_segments(const std::string& dir) {
    std::vector<std::pair<unsigned long, std::string>> found;
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
        if (stem.empty() || !std::all_of(stem.begin(), stem.end(), ::isdigit)) continue;
        found.emplace_back(std::stoul(stem), dir + "/" + name);
    }
    ::closedir(d);
    std::sort(found.begin(), found.end());
    std::vector<std::string> out;
    for (auto& f : found) out.push_back(std::move(f.second));
    return out;
}

DecodeResult decode_files(const std::vector<std::string>& paths, const DecodeOptions& opts) {
    const StreamFilter filter(opts);
    const size_t n = paths.size();
    std::vector<std::vector<uint8_t>> heads(n);
    // Sniff the first bytes: a 0.1.x directory must be decoded in order (ticks carry across).
    bool legacy = false;
    for (size_t i = 0; i < n && !legacy; ++i) legacy = file_is_legacy(paths[i]);
    DecodeResult result;
    if (legacy) {
        SegmentDecoder dec(opts, filter);
        std::unordered_map<uint32_t, int64_t> last_tick;
        bool broken = false;
        for (const auto& path : paths) {
            if (broken) {
                result.skipped.push_back({path, 0, 0,
                                          "not read: an earlier 0.1.x segment is damaged and 0.1.x "
                                          "epochs are deltas that run across segments"});
                continue;
            }
            std::vector<uint8_t> data;
            std::string err;
            if (!read_file(path, data, err)) {
                result.skipped.push_back({path, 0, 0, "cannot read: " + err});
                broken = true;
                continue;
            }
            if (is_legacy(data) || data.empty()) {
                broken = !dec.decode_legacy(path, data, last_tick, result);
            } else {
                // Not a 0.1.x segment (damaged, or foreign): its frames may have carried tick
                // deltas, so no later 0.1.x epoch can be trusted.
                dec.decode_v1(path, data, result);
                broken = true;
            }
        }
        return result;
    }
    std::vector<DecodeResult> parts(n);
    std::vector<std::string> errors(n);
    unsigned threads = opts.threads ? opts.threads : std::max(1u, std::thread::hardware_concurrency());
    threads = unsigned(std::min<size_t>(threads, n));
    std::atomic<size_t> next{0};
    auto work = [&] {
        for (size_t i = next++; i < n; i = next++) {
            try {
                std::vector<uint8_t> data;
                std::string err;
                if (!read_file(paths[i], data, err)) {
                    parts[i].skipped.push_back({paths[i], 0, 0, "cannot read: " + err});
                    continue;
                }
                SegmentDecoder own(opts, filter);  // registrations are per segment
                own.decode_v1(paths[i], data, parts[i]);
            } catch (const std::exception& e) {
                errors[i] = e.what();  // never let an exception escape a thread
            }
        }
    };
    if (threads <= 1) {
        work();
    } else {
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t) pool.emplace_back(work);
        for (auto& t : pool) t.join();
    }
    for (size_t i = 0; i < n; ++i)
        if (!errors[i].empty()) throw FormatFailure(errors[i]);
    for (auto& part : parts) merge_result(result, std::move(part));
    return result;
}

DecodeResult decode_directory(const std::string& dir, const DecodeOptions& opts) {
    return decode_files(list_segments(dir), opts);
}

}  // namespace ddl
