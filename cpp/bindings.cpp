// Python bindings of the native core: argument conversion and GIL handling only. Every call that
// encodes, waits or does I/O releases the GIL; the numpy arrays it reads stay referenced by this
// frame for the whole call. C++ exceptions become the classes of disco_data_logger/errors.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "codec.hpp"
#include "decoder.hpp"
#include "errors.hpp"
#include "logger_core.hpp"
#include "periodic.hpp"

#ifndef DDL_VERSION
#define DDL_VERSION "0+unknown"
#endif

namespace py = pybind11;
using ddl::InvalidInput;

namespace {

// Python exception classes from disco_data_logger.errors; references held for the process life.
struct ErrorTypes {
    PyObject* invalid = PyExc_ValueError;
    PyObject* unknown = PyExc_KeyError;
    PyObject* closed = PyExc_RuntimeError;
    PyObject* writer = PyExc_OSError;
    PyObject* format = PyExc_ValueError;
    PyObject* forked = PyExc_RuntimeError;
};
ErrorTypes g_errors;

void load_error_types() {
    py::module_ errors = py::module_::import("disco_data_logger.errors");
    auto grab = [&](const char* name) { return py::object(errors.attr(name)).release().ptr(); };
    g_errors.invalid = grab("InvalidRecordError");
    g_errors.unknown = grab("UnknownStreamError");
    g_errors.closed = grab("LoggerClosedError");
    g_errors.writer = grab("WriterError");
    g_errors.format = grab("FormatError");
    g_errors.forked = grab("LoggerForkedError");
}

uint32_t stream_arg(int64_t sid) {
    if (sid < 0 || sid > int64_t(std::numeric_limits<uint32_t>::max()))
        throw ddl::UnknownStream("unknown stream id " + std::to_string(sid));
    return uint32_t(sid);
}

[[noreturn]] void bad_array(ddl::LoggerCore& core, uint32_t sid, const std::string& what) {
    throw InvalidInput("stream " + std::to_string(sid) + " (" + core.stream_name(sid) + "): " + what);
}

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Whether the caller's own array can be used as it is: a 1-D, C-contiguous, aligned, native
// array of T, the common case in a simulation loop. Checked on numpy's structs directly, with no
// temporary dtype or array object per call: for a small record that costs more than encoding it.
template <class T>
bool is_exact_array(py::handle h) {
    static const int wanted = py::dtype::of<T>().normalized_num();
    const auto& api = py::detail::npy_api::get();
    if (!api.PyArray_Check_(h.ptr())) return false;
    const auto* a = py::detail::array_proxy(h.ptr());
    constexpr int flags = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ |
                          py::detail::npy_api::NPY_ARRAY_ALIGNED_;
    if (a->nd != 1 || (a->flags & flags) != flags) return false;
    const auto* d = py::detail::array_descriptor_proxy(a->descr);
    int num = d->type_num;
    if (num >= 0 && num <= py::detail::npy_api::NPY_VOID_) num = py::detail::normalized_dtype_num[num];
    return num == wanted && d->byteorder != '>';
}

// `h` as a numpy array, refused unless it is array-like and 1-D.
py::array one_d_array(ddl::LoggerCore& core, uint32_t sid, py::handle h, const char* what) {
    py::array a = py::array::ensure(h);
    if (!a) bad_array(core, sid, std::string(what) + " must be array-like");
    if (a.ndim() != 1)
        bad_array(core, sid, std::string(what) + " must be a 1-D array (got " +
                                 std::to_string(a.ndim()) + "-D)");
    return a;
}

// 1-D int64 view of `h` (copied only when its dtype or layout differ).
py::array_t<int64_t> indices_arg(ddl::LoggerCore& core, uint32_t sid, py::handle h,
                                 const char* what = "indices") {
    if (is_exact_array<int64_t>(h)) return py::reinterpret_borrow<py::array_t<int64_t>>(h);
    py::array a = one_d_array(core, sid, h, what);
    const char kind = a.dtype().kind();
    if (a.size() > 0 && kind != 'i' && kind != 'u')
        bad_array(core, sid, std::string(what) + " must have an integer dtype (got " + dtype_name(a) + ")");
    if (kind == 'u' && a.itemsize() == 8 && a.size() > 0) {
        auto u = py::array_t<uint64_t, py::array::forcecast>::ensure(a);
        auto r = u.unchecked<1>();
        for (py::ssize_t i = 0; i < r.shape(0); ++i)
            if (r(i) > uint64_t(std::numeric_limits<int64_t>::max()))
                bad_array(core, sid, std::string(what) + " value " + std::to_string(r(i)) +
                                         " at position " + std::to_string(i) + " exceeds 2^63-1");
    }
    auto out = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    if (!out) bad_array(core, sid, std::string(what) + " cannot be converted to int64");
    return out;
}

py::array_t<double> values_arg(ddl::LoggerCore& core, uint32_t sid, py::handle h,
                               const char* what = "values") {
    if (is_exact_array<double>(h)) return py::reinterpret_borrow<py::array_t<double>>(h);
    py::array a = one_d_array(core, sid, h, what);
    const char kind = a.dtype().kind();
    if (a.size() > 0 && kind != 'i' && kind != 'u' && kind != 'f')
        bad_array(core, sid, std::string(what) + " must have a real numeric dtype (got " +
                                 dtype_name(a) + ")");
    auto out = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(a);
    if (!out) bad_array(core, sid, std::string(what) + " cannot be converted to float64");
    return out;
}

// A numpy array over a decoded column, owning its malloc'd buffer: no copy.
template <class T>
py::array_t<T> to_numpy(ddl::Column<T>&& c) {
    const size_t n = c.size();
    T* p = c.release();
    if (!p) return py::array_t<T>(0);
    py::capsule owner(p, [](void* q) { std::free(q); });
    return py::array_t<T>(py::ssize_t(n), p, owner);
}

py::dict stream_info_dict(const ddl::StreamInfo& s) {
    const ddl::Registration& r = s.reg;
    py::dict d;
    d["stream_id"] = r.stream_id;
    d["epoch_scale"] = r.epoch_scale;
    d["value_scale"] = r.exact ? py::object(py::none()) : py::object(py::float_(r.value_scale));
    d["periodicity"] = r.periodic && s.version == 2 ? py::object(py::float_(r.periodicity))
                                                    : py::object(py::none());
    d["kind"] = r.periodic && s.version == 2
                    ? py::object(py::str(r.accumulator ? "accumulator" : "state"))
                    : py::object(py::none());
    d["version"] = s.version;
    if (s.version == 2) {
        py::list labels;
        for (const auto& l : r.labels)
            labels.append(py::make_tuple(py::str(l.name), py::str(l.value_json)));
        d["labels"] = labels;
        d["json"] = py::none();
    } else {
        d["labels"] = py::none();
        d["json"] = py::bytes(s.json);
    }
    d["unresolved"] = s.unresolved;
    return d;
}

py::list skipped_list(const std::vector<ddl::SkipReport>& skipped) {
    py::list out;
    for (const auto& s : skipped) {
        py::dict d;
        d["segment"] = s.segment;
        d["offset"] = s.offset;
        d["length"] = s.length;
        d["kind"] = ddl::skip_kind_name(s.kind);
        d["reason"] = s.reason;
        if (s.stream_id >= 0) d["stream_id"] = s.stream_id;
        out.append(d);
    }
    return out;
}

py::dict registrations_dict(const std::map<uint32_t, ddl::StreamInfo>& regs) {
    py::dict out;
    for (const auto& kv : regs) out[py::int_(kv.first)] = stream_info_dict(kv.second);
    return out;
}

py::dict result_dict(ddl::DecodeResult&& r) {
    py::dict out;
    out["stream_id"] = to_numpy(std::move(r.stream_id));
    out["epoch"] = to_numpy(std::move(r.epoch));
    if (r.large_offsets) out["offsets"] = to_numpy(std::move(r.offsets64));
    else out["offsets"] = to_numpy(std::move(r.offsets32));
    out["indices"] = to_numpy(std::move(r.indices));
    out["values"] = to_numpy(std::move(r.values));
    out["registrations"] = registrations_dict(r.registrations);
    out["skipped"] = skipped_list(r.skipped);
    py::list segments;
    for (const auto& s : r.segments) {
        py::dict d;
        d["path"] = s.path;
        d["version"] = s.version;
        d["has_footer"] = s.has_footer;
        d["torn"] = s.torn;
        d["bytes"] = s.bytes;
        d["blocks"] = s.blocks;
        d["bad_blocks"] = s.bad_blocks;
        d["records"] = s.records;
        segments.append(d);
    }
    out["segments"] = segments;
    out["unregistered"] = r.unregistered;
    return out;
}

ddl::DecodeOptions decode_options(const py::dict& fallback, const py::object& stream_ids,
                                  unsigned threads, const py::object& segments) {
    ddl::DecodeOptions o;
    for (auto item : fallback) {
        ddl::Registration r;
        r.stream_id = item.first.cast<uint32_t>();
        auto t = item.second.cast<py::tuple>();  // (epoch_scale, value_scale or None)
        r.epoch_scale = t[0].cast<double>();
        r.exact = t[1].is_none();
        r.value_scale = r.exact ? 0.0 : t[1].cast<double>();
        o.fallback[r.stream_id] = r;
    }
    if (!stream_ids.is_none()) {
        o.filter = true;
        o.stream_ids = stream_ids.cast<std::vector<uint32_t>>();
    }
    if (!segments.is_none()) {
        o.segment_filter = true;
        o.segments = segments.cast<std::vector<std::string>>();
    }
    o.threads = threads;
    return o;
}

// Loggers are owned through this: in a forked child the logger's thread and locks belong to the
// parent, so it is never destroyed there (the child's exit leaves it as it is).
std::shared_ptr<ddl::LoggerCore> make_core(const ddl::LoggerOptions& o) {
    return std::shared_ptr<ddl::LoggerCore>(new ddl::LoggerCore(o), [](ddl::LoggerCore* c) {
        if (!c->forked()) delete c;
    });
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "Native core of disco-data-logger (private: use the disco_data_logger package).";
    m.attr("__version__") = DDL_VERSION;
    m.attr("FORMAT_VERSION") = int(ddl::kFormatVersion);

    load_error_types();
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ddl::InvalidInput& e) {
            PyErr_SetString(g_errors.invalid, e.what());
        } catch (const ddl::UnknownStream& e) {
            PyErr_SetObject(g_errors.unknown, py::make_tuple(e.what()).ptr());
        } catch (const ddl::ForkedError& e) {
            PyErr_SetString(g_errors.forked, e.what());
        } catch (const ddl::ClosedError& e) {
            PyErr_SetString(g_errors.closed, e.what());
        } catch (const ddl::WriterFailure& e) {
            // OSError(errno, message) so that .errno tells disk-full from permission-denied.
            PyErr_SetObject(g_errors.writer, py::make_tuple(e.error_number, e.what()).ptr());
        } catch (const ddl::FormatFailure& e) {
            PyErr_SetString(g_errors.format, e.what());
        }
    });

    py::class_<ddl::LoggerCore, std::shared_ptr<ddl::LoggerCore>>(m, "LoggerCore")
        .def(py::init([](const std::string& dir, size_t ring_bytes, size_t block_bytes,
                         uint64_t rotate_bytes, int zstd_level, double flush_interval) {
                 const ddl::LoggerOptions o{dir,        ring_bytes, block_bytes,
                                            rotate_bytes, zstd_level, flush_interval};
                 py::gil_scoped_release nogil;
                 return make_core(o);
             }),
             py::arg("dir"), py::arg("ring_bytes"), py::arg("block_bytes"), py::arg("rotate_bytes"),
             py::arg("zstd_level"), py::arg("flush_interval"))
        .def(
            "register_stream",
            [](ddl::LoggerCore& c, const std::string& name, double epoch_scale,
               py::object value_scale, py::object periodicity, py::object kind,
               const std::vector<std::string>& label_names,
               const std::vector<std::string>& label_values) {
                if (label_names.size() != label_values.size())
                    throw InvalidInput("stream " + name + ": label_names and label_values differ in length");
                ddl::Registration reg;
                reg.epoch_scale = epoch_scale;
                reg.exact = value_scale.is_none();
                reg.value_scale = reg.exact ? 0.0 : value_scale.cast<double>();
                reg.periodic = !periodicity.is_none();
                if (reg.periodic) {
                    reg.periodicity = periodicity.cast<double>();
                    const std::string k = kind.is_none() ? std::string() : kind.cast<std::string>();
                    if (k != "state" && k != "accumulator")
                        throw InvalidInput("stream " + name + ": kind must be 'state' or 'accumulator' (got '" + k + "')");
                    reg.accumulator = k == "accumulator";
                } else if (!kind.is_none()) {
                    throw InvalidInput("stream " + name + ": kind is for periodic streams only");
                }
                reg.labels.reserve(label_names.size());
                for (size_t i = 0; i < label_names.size(); ++i)
                    reg.labels.push_back({label_names[i], label_values[i]});
                py::gil_scoped_release nogil;
                return c.register_stream(name, std::move(reg));
            },
            py::arg("name"), py::arg("epoch_scale"), py::arg("value_scale"), py::arg("periodicity"),
            py::arg("kind"), py::arg("label_names"), py::arg("label_values"),
            "Register a stream: labels as names and their values' JSON texts; value_scale=None "
            "stores values exactly; periodicity and kind for periodic streams (else None).")
        .def(
            "retire_streams",
            [](ddl::LoggerCore& c, const std::vector<int64_t>& ids) {
                std::vector<uint32_t> sids;
                sids.reserve(ids.size());
                for (int64_t id : ids)
                    if (id >= 0 && id <= int64_t(std::numeric_limits<uint32_t>::max()))
                        sids.push_back(uint32_t(id));
                py::gil_scoped_release nogil;
                c.retire_streams(sids);
            },
            py::arg("ids"), "Release everything kept per stream for these ids (never reused).")
        .def(
            "record",
            [](ddl::LoggerCore& c, int64_t sid_arg, double epoch, py::handle indices,
               py::handle values) {
                const uint32_t sid = stream_arg(sid_arg);
                auto idx = indices_arg(c, sid, indices);
                auto vals = values_arg(c, sid, values);
                if (idx.size() != vals.size())
                    bad_array(c, sid, "indices and values differ in length (" +
                                          std::to_string(idx.size()) + " vs " +
                                          std::to_string(vals.size()) + ")");
                py::gil_scoped_release nogil;
                c.record(sid, epoch, idx.data(), vals.data(), size_t(idx.size()));
            },
            py::arg("stream_id"), py::arg("epoch"), py::arg("indices"), py::arg("values"))
        .def(
            "record_many",
            [](ddl::LoggerCore& c, py::handle stream_ids, py::handle epochs, py::handle offsets,
               py::handle indices, py::handle values) {
                auto sids = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(
                    py::array::ensure(stream_ids));
                if (!sids || sids.ndim() > 1)
                    throw InvalidInput("record_many: stream_ids must be an int or a 1-D array of ints");
                std::vector<uint32_t> sid32(size_t(sids.size()));
                for (py::ssize_t i = 0; i < sids.size(); ++i) sid32[size_t(i)] = stream_arg(sids.data()[i]);
                if (sid32.empty()) throw InvalidInput("record_many: stream_ids is empty");
                const uint32_t first = sid32[0];
                c.check_stream(first);
                auto ep = values_arg(c, first, epochs, "epochs");
                auto off = indices_arg(c, first, offsets, "offsets");
                auto idx = indices_arg(c, first, indices);
                auto vals = values_arg(c, first, values);
                const size_t n_records = size_t(ep.size());
                if (size_t(off.size()) != n_records + 1)
                    throw InvalidInput("record_many: offsets must have len(epochs) + 1 entries (got " +
                                       std::to_string(off.size()) + " for " +
                                       std::to_string(n_records) + " records)");
                if (idx.size() != vals.size())
                    throw InvalidInput("record_many: indices and values differ in length");
                if (n_records > 0 && off.data()[n_records] != idx.size())
                    throw InvalidInput("record_many: offsets[-1] must equal len(indices)");
                py::gil_scoped_release nogil;
                c.record_many(sid32.data(), sid32.size(), ep.data(), n_records, off.data(),
                              idx.data(), vals.data());
            },
            py::arg("stream_ids"), py::arg("epochs"), py::arg("offsets"), py::arg("indices"),
            py::arg("values"))
        .def("flush", &ddl::LoggerCore::flush, py::call_guard<py::gil_scoped_release>())
        .def("close", &ddl::LoggerCore::close, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("closed", &ddl::LoggerCore::closed)
        .def("stats",
             [](ddl::LoggerCore& c) {
                 ddl::LoggerStats s;
                 {
                     py::gil_scoped_release nogil;
                     s = c.stats();
                 }
                 py::dict d;
                 d["records"] = s.records;
                 d["nonzeros"] = s.nonzeros;
                 d["raw_bytes"] = s.raw_bytes;
                 d["compressed_bytes"] = s.compressed_bytes;
                 d["blocks"] = s.blocks;
                 d["segments"] = s.segments;
                 d["stalls"] = s.stalls;
                 d["stall_seconds"] = s.stall_seconds;
                 d["queue_peak_bytes"] = s.queue_peak_bytes;
                 d["streams"] = s.streams;
                 return d;
             })
        .def(
            "stream_counters",
            [](ddl::LoggerCore& c, py::object ids) {
                std::vector<uint32_t> wanted;
                const bool some = !ids.is_none();
                if (some)
                    for (auto h : ids) wanted.push_back(stream_arg(h.cast<int64_t>()));
                std::vector<std::pair<uint32_t, ddl::StreamCounters>> v;
                {
                    py::gil_scoped_release nogil;
                    v = c.stream_counters(some ? &wanted : nullptr);
                }
                py::list out;
                for (const auto& s : v)
                    out.append(py::make_tuple(s.first, s.second.records, s.second.min_epoch,
                                              s.second.max_epoch));
                return out;
            },
            py::arg("ids") = py::none(),
            "(stream_id, records, min_epoch, max_epoch) of every live stream, or of the given ids "
            "in order.");

    py::class_<ddl::PeriodicAggregator, std::shared_ptr<ddl::PeriodicAggregator>>(m, "PeriodicCore")
        .def(py::init([](std::shared_ptr<ddl::LoggerCore> core, int64_t sid, double periodicity,
                         const std::string& kind) {
                 using K = ddl::PeriodicAggregator::Kind;
                 if (kind != "state" && kind != "accumulator")
                     throw InvalidInput("kind must be 'state' or 'accumulator' (got '" + kind + "')");
                 return std::make_shared<ddl::PeriodicAggregator>(
                     std::move(core), stream_arg(sid), periodicity,
                     kind == "state" ? K::State : K::Accumulator);
             }),
             py::arg("core"), py::arg("stream_id"), py::arg("periodicity"), py::arg("kind"))
        .def(
            "record",
            [](ddl::PeriodicAggregator& p, ddl::LoggerCore& c, double epoch, py::handle indices,
               py::handle values) {
                c.check_fork();  // before the aggregator's lock, which the parent may hold
                const uint32_t sid = p.stream_id();
                auto idx = indices_arg(c, sid, indices);
                auto vals = values_arg(c, sid, values);
                if (idx.size() != vals.size())
                    bad_array(c, sid, "indices and values differ in length (" +
                                          std::to_string(idx.size()) + " vs " +
                                          std::to_string(vals.size()) + ")");
                py::gil_scoped_release nogil;
                p.record(epoch, idx.data(), vals.data(), size_t(idx.size()));
            },
            py::arg("core"), py::arg("epoch"), py::arg("indices"), py::arg("values"))
        .def(
            "close",
            [](ddl::PeriodicAggregator& p, double final_epoch) {
                p.core().check_fork();  // before the aggregator's lock, which the parent may hold
                py::gil_scoped_release nogil;
                p.close(final_epoch);
            },
            py::arg("final_epoch"))
        .def_property_readonly("closed", &ddl::PeriodicAggregator::closed);

    m.def(
        "decode_directory",
        [](const std::string& dir, py::dict fallback, py::object stream_ids, unsigned threads,
           py::object segments, bool registrations) {
            ddl::DecodeOptions o = decode_options(fallback, stream_ids, threads, segments);
            o.registrations = registrations;
            ddl::DecodeResult r;
            {
                py::gil_scoped_release nogil;
                r = ddl::decode_directory(dir, o);
            }
            return result_dict(std::move(r));
        },
        py::arg("dir"), py::arg("fallback") = py::dict(), py::arg("stream_ids") = py::none(),
        py::arg("threads") = 0, py::arg("segments") = py::none(), py::arg("registrations") = true,
        "Decode the segments of a logger directory (all, or the named files) into columns "
        "(numpy arrays); with stream_ids, only those streams and their registrations "
        "(none with registrations=False).");
    m.def(
        "read_registrations",
        [](const std::string& dir, py::object segments) {
            std::vector<std::string> names;
            const bool filter = !segments.is_none();
            if (filter) names = segments.cast<std::vector<std::string>>();
            ddl::RegistrationsResult r;
            {
                py::gil_scoped_release nogil;
                r = ddl::read_registrations(dir, filter ? &names : nullptr);
            }
            py::dict out;
            out["registrations"] = registrations_dict(r.registrations);
            out["skipped"] = skipped_list(r.skipped);
            return out;
        },
        py::arg("dir"), py::arg("segments") = py::none(),
        "The in-band registrations of a logger directory (all its segments, or the named "
        "files), without decompressing any block.");
    m.def("list_segments", &ddl::list_segments, py::arg("dir"));
}
