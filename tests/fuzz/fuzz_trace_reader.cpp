// Fuzzes the trace reader: each input is a JSONL file, read both line by line
// (ParseTraceRecord) and as a file (ReadTraces). Never a crash; an accepted record satisfies the
// documented invariants and round-trips through TraceRecordToJson.
#include <cmath>
#include <string>

#include "fuzz/fuzz_common.hpp"
#include "sparsebudget/traces.hpp"

using namespace sparsebudget;

namespace {

void CheckRecord(const TraceRecord& r) {
  SBFUZZ_CHECK(!r.id.empty() && !r.task().empty(), "empty id/task accepted");
  SBFUZZ_CHECK(r.context_length() >= 1 && r.features.block_size >= 1, "bad shape accepted");
  SBFUZZ_CHECK(!r.curve.empty(), "empty curve accepted");
  for (size_t i = 1; i < r.curve.size(); ++i)
    SBFUZZ_CHECK(r.curve[i].blocks > r.curve[i - 1].blocks, "curve not strictly ascending: " + r.id);
  // The query functions must be total on accepted records.
  const int64_t nb = r.causal_blocks();
  for (int64_t b : {int64_t{0}, int64_t{1}, nb / 2, nb, nb + 1}) {
    const double q = QualityAt(r, b);
    SBFUZZ_CHECK(!std::isnan(q), "QualityAt is NaN");
    (void)Degraded(r, b);
  }
  (void)MonotoneOracleBlocks(r);
  const std::string j = TraceRecordToJson(r);
  auto back = ParseTraceRecord(j, 1);
  SBFUZZ_CHECK(back.ok(), "TraceRecordToJson output rejected: " + back.status().ToString() + "\n" + j);
  SBFUZZ_CHECK(TraceRecordToJson(*back) == j, "trace round trip differs:\n" + j);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 16)) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  // Line by line.
  size_t start = 0;
  int64_t line = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line;
    auto r = ParseTraceRecord(text.substr(start, end - start), line);
    if (r.ok()) {
      SBFUZZ_CHECK(r->line == line, "line number");
      CheckRecord(*r);
    } else {
      SBFUZZ_CHECK(r.status().message().find("line " + std::to_string(line)) != std::string::npos,
                   "error does not name the line: " + r.status().ToString());
    }
    start = end + 1;
  }
  // As a file.
  static const std::string path = sbfuzz::ScratchPath("traces");
  sbfuzz::WriteFile(path, data, size);
  auto all = ReadTraces(path);
  if (all.ok()) {
    SBFUZZ_CHECK(!all->empty(), "no records but ok");
    for (const TraceRecord& r : *all) CheckRecord(r);
  } else {
    SBFUZZ_CHECK(all.status().message().find(path) != std::string::npos, "error does not name the file");
  }
  return 0;
}
