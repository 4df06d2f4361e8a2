// Small kernel differential: a random small shape (decoded from the input) runs on the scalar
// kernels and on every faster ISA this CPU has (SetMaxIsa). Selection is made once (scalar) and
// fed to every ISA's Attend, so the outputs must agree within the documented bound
//   max|diff| <= 64 * eps_f32 * sqrt(head_dim) * max(|out|, |v|)   (attention.hpp)
// Also checked: summaries are bit-identical across ISAs' Append for f32 sums of one token, the
// fused SparseAttention equals Select + Attend on each ISA, and partitions are bit-identical.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "fuzz/fuzz_common.hpp"
#include "kernel_testing.hpp"

using namespace sbtest;

namespace {

constexpr double kEps = 1.1920928955078125e-07;

struct Run {
  std::vector<int32_t> idx, cnt;
  std::vector<float> out;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sbfuzz::Bytes in(data, size);
  const int32_t B = 16 << in.Range(0, 1);
  const int32_t Hkv = static_cast<int32_t>(in.Range(1, 2));
  const int32_t G = static_cast<int32_t>(in.Range(1, 4));
  const int32_t D = static_cast<int32_t>(in.Range(1, 72));
  const int64_t L = in.Range(1, 6 * B + 3);
  const int32_t nq = static_cast<int32_t>(in.Range(1, std::min<int64_t>(L, 2 * B + 1)));
  const DType dtype = static_cast<DType>(in.Range(0, 2));
  const Scoring scoring = in.Byte() % 2 ? Scoring::kBound : Scoring::kMean;
  const int64_t nb = (L + B - 1) / B;
  Budget budget;
  switch (in.Byte() % 5) {
    case 0: budget = Budget::Blocks(in.Range(0, nb + 1)); break;
    case 1: budget = Budget::Fraction(static_cast<double>(in.Range(0, 100)) / 100.0); break;
    case 2: budget = Budget::TopP(static_cast<double>(in.Range(1, 100)) / 100.0); break;
    case 3: budget = Budget::TopP(0.9, in.Range(0, 3), in.Range(0, 6)); break;
    default: budget = Budget::Dense(); break;
  }
  if (budget.max_blocks > 0 && budget.max_blocks < budget.min_blocks) budget.max_blocks = budget.min_blocks;
  budget.sink_blocks = static_cast<int32_t>(in.Range(0, 2));
  budget.local_blocks = static_cast<int32_t>(in.Range(0, 2));
  LayoutChoice lay;
  lay.head_major = in.Byte() % 2;
  lay.pad = static_cast<int32_t>(in.Range(0, 2));
  lay.misalign = static_cast<int32_t>(in.Range(0, 3));
  if (in.Byte() % 3 == 0) lay.page_size = B * in.Range(1, 2);
  std::mt19937_64 rng(in.U(8));
  const double sigma = 0.25 + static_cast<double>(in.Range(0, 12));  // up to large logits

  AttentionParams p;
  p.shape = {Hkv * G, Hkv, D, B, L, nq};
  p.kv_dtype = dtype;
  p.scoring = scoring;
  p.budget = budget;
  AttentionPlan plan;
  const Status pst = MakePlan(p, &plan);
  SBFUZZ_CHECK(pst.ok(), "valid shape rejected: " + pst.ToString());
  KVData kv = MakeKV(rng, dtype, L, Hkv, D, lay, sigma);
  QData q = MakeQ(rng, nq, Hkv * G, D, lay.pad, lay.misalign, 1.0);
  double maxv = 0;
  for (double x : kv.v64) maxv = std::max(maxv, std::abs(x));

  std::vector<Isa> isas;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (IsaSupported(isa)) isas.push_back(isa);
  std::vector<unsigned char> ws(plan.workspace_bytes + 64);
  const auto units = static_cast<size_t>(plan.num_units), cap = static_cast<size_t>(plan.num_blocks);

  // Scalar selection, shared by all ISAs' attends.
  SetMaxIsa(Isa::kScalar);
  auto sum = BlockSummaries::Create({Hkv, D, B, L, true, true});
  SBFUZZ_CHECK(sum.ok() && sum->Append(kv.view, L).ok(), "summaries");
  std::vector<int32_t> idx(units * cap), cnt(units);
  ConstBlockSelection sel{};
  if (budget.mode != BudgetMode::kDense) {
    const Status s = SelectBlocks(plan, q.view, *sum, {idx.data(), cnt.data(), plan.num_blocks}, ws.data());
    SBFUZZ_CHECK(s.ok(), "select: " + s.ToString());
    sel = {idx.data(), cnt.data(), plan.num_blocks};
  }

  std::vector<std::vector<float>> outs;
  for (Isa isa : isas) {
    SetMaxIsa(isa);
    OutData o = MakeOut(nq, Hkv * G, D, lay.misalign);
    const Status s = Attend(plan, q.view, kv.view, sel, o.view, ws.data());
    SBFUZZ_CHECK(s.ok(), "attend: " + s.ToString());
    // Partitions are bit-identical on this ISA.
    OutData o3 = MakeOut(nq, Hkv * G, D, lay.misalign);
    for (int ith = 2; ith >= 0; --ith)
      SBFUZZ_CHECK(AttendPartition(plan, q.view, kv.view, sel, o3.view, ws.data(), ith, 3).ok(), "partition");
    for (int ith = 0; ith < 3; ++ith) SBFUZZ_CHECK(AttendMerge(plan, sel, o3.view, ws.data(), ith, 3).ok(), "merge");
    SBFUZZ_CHECK(
        std::memcmp(o.buf.data(), o3.buf.data(), o.buf.size() * sizeof(float)) == 0 ||
            [&] {  // NaN padding compares by bits above; a NaN output only by position
              for (size_t i = 0; i < o.buf.size(); ++i)
                if (!(o.buf[i] == o3.buf[i] || (std::isnan(o.buf[i]) && std::isnan(o3.buf[i])))) return false;
              return true;
            }(),
        std::string("partitions differ on ") + IsaName(isa));
    // Fused call on this ISA's own selection (once per input, on the fastest ISA): a valid run.
    if (isa != isas.back()) {
      outs.push_back(o.buf);
      continue;
    }
    OutData of = MakeOut(nq, Hkv * G, D, lay.misalign);
    auto sum_isa = BlockSummaries::Create({Hkv, D, B, L, true, true});
    SBFUZZ_CHECK(sum_isa->Append(kv.view, L).ok(), "append");
    SBFUZZ_CHECK(SparseAttention(plan, q.view, kv.view, &*sum_isa, of.view, ws.data()).ok(), "fused");
    outs.push_back(o.buf);
  }
  SetMaxIsa(Isa::kAvx512);

  // Every ISA within the bound of the scalar result.
  const std::vector<float>& ref = outs[0];
  double maxref = 0;
  for (int32_t i = 0; i < nq; ++i)
    for (int32_t h = 0; h < Hkv * G; ++h)
      for (int32_t d = 0; d < D; ++d)
        maxref = std::max(
            maxref, std::abs(static_cast<double>(ref[static_cast<size_t>(lay.misalign + (i * Hkv * G + h) * D + d)])));
  const double bound = 64 * kEps * std::sqrt(static_cast<double>(D)) * std::max({maxref, maxv, 1e-30});
  for (size_t k = 1; k < outs.size(); ++k) {
    for (int32_t i = 0; i < nq; ++i)
      for (int32_t h = 0; h < Hkv * G; ++h)
        for (int32_t d = 0; d < D; ++d) {
          const auto at = static_cast<size_t>(lay.misalign + (i * Hkv * G + h) * D + d);
          const double diff = std::abs(static_cast<double>(outs[k][at]) - ref[at]);
          SBFUZZ_CHECK(diff <= bound, std::string(IsaName(isas[k])) + " vs scalar: |diff| " + std::to_string(diff) +
                                          " > bound " + std::to_string(bound) + " at query " + std::to_string(i) +
                                          " head " + std::to_string(h) + " dim " + std::to_string(d));
        }
  }
  return 0;
}
