// The receiver's persisted state on disk (docs/FORMAT.md, "Persisted state").
//
// One folder holds the state of every plugin lineage, two files each:
//
//   <stem>.metadata.json   the lineage's call sites (JSON, small)
//   <stem>.spans.bin       its live spans and the next-id counter (binary,
//                          format version 2: header with magic, version,
//                          kind, body length and CRC-32C; varints; tables of
//                          field names and call-site ids)
//
// where <stem> is the lineage name escaped for a file name (lineage_file_stem).
// A <stem>.spans.json of an older build (version 1, JSON) is still read when
// no .spans.bin exists, and removed by the next save. Writing is crash-safe
// (temporary file in the same folder, fsync, rename over, fsync of the
// folder), metadata first and only when its bytes changed: a crash between
// the two leaves newer call sites with older spans, which is consistent,
// because a lineage's call sites are only ever added.
//
// Reading never throws and never trusts the file: a corrupt, truncated,
// newer-version or inconsistent file gives a typed error naming the file and
// the problem, and the lineage's files are moved aside
// (<name>.corrupt-<UTC time>), so the caller starts empty and a later save
// cannot silently overwrite what was there.
//
//   auto r = tt::state::load_lineage_state(dir, "orders");
//   if (r.status == tt::state::load_status::failed)
//       for (auto& e : r.errors) log(to_string(e));  // names the file and where it went
//   tt::host::receiver recv("orders", pipeline, std::move(r.state));
//   ...
//   if (auto err = tt::state::save_lineage_state(dir, "orders", recv.persist_metadata(), recv.persist()))
//       log(to_string(*err));
#pragma once

#include <tracetunnel/persisted.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tt::state {

inline constexpr std::string_view state_magic = "tracetunnel-state";
// The schema written by this build (2: binary spans file); files naming a
// newer one are refused. Version 1 (JSON spans file) is still read.
inline constexpr int state_format_version = 2;

enum class state_errc : std::uint8_t {
    io_error,             // the file or folder cannot be read or written
    invalid_lineage,      // an empty or over-long lineage name
    invalid_json,         // not JSON, truncated, invalid UTF-8, trailing bytes
    wrong_magic,          // not a tracetunnel state file
    wrong_kind,           // a spans file where metadata belongs, or the reverse
    unsupported_version,  // a newer schema than this build reads
    missing_field,        // a required member is absent
    unknown_field,        // a member the schema does not have
    wrong_type,           // a member of the wrong JSON type
    invalid_value,        // the right type with unreadable content ("12a" as id)
    inconsistent,         // every value readable, but the tables disagree
    internal_error,       // not the file's fault (out of memory)
    truncated,            // a binary file shorter than its header says (torn, cut short)
    checksum_mismatch,    // a binary file whose body does not match its CRC-32C
};

std::string_view to_string(state_errc code) noexcept;

struct state_error {
    state_errc code = state_errc::io_error;
    std::filesystem::path file;        // the file at fault
    std::string where;                 // JSON Pointer of the offending value, "" = whole file
    std::string message;               // for humans
    std::filesystem::path moved_to;    // where the file was moved aside, empty if it was not
};

// "/s/orders.spans.json: inconsistent at /spans/1/parent: ...; moved aside to ...": one line.
std::string to_string(const state_error& e);

enum class load_status : std::uint8_t {
    loaded,  // state holds what was on disk
    none,    // no state for this lineage yet; state is empty
    failed,  // errors says why; state is empty; the files were moved aside (move_aside)
};

struct load_result {
    load_status status = load_status::none;
    receiver_state state;
    // When failed: one per bad file (the first problem found in it; both
    // files are read even when one is bad), then any file that could not be
    // moved aside.
    std::vector<state_error> errors;
    // Every file moved aside: (from, to). A failed load moves both of a
    // lineage's files, the sound one too, so that starting empty and saving
    // later cannot overwrite it.
    std::vector<std::pair<std::filesystem::path, std::filesystem::path>> moved_aside;
};

enum class on_bad_file : std::uint8_t { move_aside, keep };

// The file-name stem for a lineage: bytes outside [A-Za-z0-9._-], '%' and a
// leading '.' become %XX. nullopt for an empty name or one whose stem would
// be longer than 200 bytes.
std::optional<std::string> lineage_file_stem(std::string_view lineage);
// The reverse; nullopt when `stem` is not one lineage_file_stem writes.
std::optional<std::string> lineage_from_file_stem(std::string_view stem);

std::filesystem::path metadata_path(const std::filesystem::path& dir, std::string_view lineage);
// The binary spans file (<stem>.spans.bin), what this build writes.
std::filesystem::path spans_path(const std::filesystem::path& dir, std::string_view lineage);
// The version-1 JSON spans file (<stem>.spans.json) of older builds: read
// only when spans_path is absent, removed by the next save.
std::filesystem::path spans_json_path(const std::filesystem::path& dir, std::string_view lineage);

// Writes both files of `lineage` (creating `dir` if needed), crash-safe.
// nullopt on success. Never throws.
std::optional<state_error> save_lineage_state(const std::filesystem::path& dir, std::string_view lineage,
                                              const persisted_metadata& metadata,
                                              const persisted_spans& spans) noexcept;

// Reads and validates both files of `lineage`. Never throws.
load_result load_lineage_state(const std::filesystem::path& dir, std::string_view lineage,
                               on_bad_file policy = on_bad_file::move_aside) noexcept;

// The decoding and checks of load_lineage_state on texts in memory, for tools
// and the fuzz target (tests/fuzz): nullopt = that file does not exist. No
// file is touched, so nothing is moved aside and errors have an empty `file`.
// `spans_text` is read as the binary form when it starts with its magic,
// else as version-1 JSON.
load_result decode_lineage_state(std::optional<std::string_view> metadata_text,
                                 std::optional<std::string_view> spans_text, std::string_view lineage) noexcept;

// The lineages with a state file in `dir`, sorted; a state-looking file whose
// name is not a valid stem is reported in `bad_names` (when given).
std::vector<std::string> list_lineages(const std::filesystem::path& dir,
                                       std::vector<std::filesystem::path>* bad_names = nullptr) noexcept;

// The plugin's own state (the bytes its tt_plugin_save_state wrote), kept
// beside the lineage's files as <stem>.plugin-state so that a host restart
// can hand it to the next start. A small header carries the length and a
// checksum, so a torn or edited file is refused (and moved aside) rather than
// handed to the plugin. Crash-safe like the other files. Never throw.
struct blob_result {
    load_status status = load_status::none;
    std::vector<std::uint8_t> bytes;
    std::optional<state_error> error;  // when failed
    // The spans file's next_id at the commit these bytes were saved with (the
    // plugin knows no span id from there on); 0 = not recorded (older file).
    std::uint64_t paired_next_id = 0;
};
std::filesystem::path plugin_state_path(const std::filesystem::path& dir, std::string_view lineage);
// `paired_next_id`: the next_id of the spans commit written with these bytes
// (0 = none); docs/RELIABILITY.md says how a restart after a crash uses it.
std::optional<state_error> save_plugin_state(const std::filesystem::path& dir, std::string_view lineage,
                                             const std::vector<std::uint8_t>& bytes,
                                             std::uint64_t paired_next_id = 0) noexcept;
// Removes the file (a plugin build without state hooks must not get a stale one later).
std::optional<state_error> remove_plugin_state(const std::filesystem::path& dir, std::string_view lineage) noexcept;
blob_result load_plugin_state(const std::filesystem::path& dir, std::string_view lineage,
                              on_bad_file policy = on_bad_file::move_aside) noexcept;

// The serialized forms (what save writes), for tests and tools. Throw only
// std::bad_alloc. encode_spans gives the binary form (bytes in a string);
// encode_spans_json the version-1 JSON form, for people and tools
// (`tt-state dump`): this build reads it as a <stem>.spans.json.
std::string encode_metadata(std::string_view lineage, const persisted_metadata& metadata);
std::string encode_spans(std::string_view lineage, const persisted_spans& spans);
std::string encode_spans_json(std::string_view lineage, const persisted_spans& spans);

}  // namespace tt::state
