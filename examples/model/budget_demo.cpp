// The main demo: held-out requests through the small model, each decoded at the budget a
// predictor chooses for it, against dense attention.
//
//   budget_demo --model data/model --requests R.jsonl --predictor NAME=FILE.json ... [--threads 2]
//
// Per request: dense prefill of the prompt but its last token; the last prompt token is decoded
// densely once to read the request's features (length, task, next-token entropy and top-1
// probability, attention-probe statistics of every layer); then for dense and for every
// predictor the last prompt token and the greedy answer are decoded with block-sparse attention
// (Quest bound scoring, sink and local block kept) in every layer at the predicted budget.
// Reports per predictor: exact-match accuracy, mean kept fraction of causal blocks, attention
// time per request and its speedup over dense, and the share of requests degraded vs dense.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sparsebudget/escalation.hpp"
#include "sparsebudget/features.hpp"
#include "sparsebudget/predictor.hpp"
#include "sparsebudget/probe.hpp"
#include "tiny_model.hpp"

using namespace sparsebudget;

namespace {

struct Request {
  std::string id, task;
  std::vector<int32_t> prompt, answer;
};

struct Row {
  std::string name;
  std::unique_ptr<Predictor> predictor;  // null = dense
  bool label_free = false;               // predict without the request's task label
  int correct = 0, degraded = 0, n = 0;
  int64_t recomputed = 0;  // decode steps recomputed by the escalation policy
  double kept = 0, causal = 0, attn_seconds = 0, fraction_sum = 0;
  std::map<std::string, std::pair<int, int>> by_task;  // correct, n
};

// Greedy decode of the last prompt token and the answer at `budget`; true if it matches.
// Decodes the answer greedily at `budget`. With an escalation policy (an "escalate" predictor),
// a step whose token is unsure under its budget is recomputed at the next rung (or the answer is
// restarted there), as an engine would; recomputed steps count in the blocks read.
bool Run(tinymodel::Session& s, const Request& r, const Budget& budget, const EscalationPolicy* policy,
         EscalationState state, Row* row) {
  const int64_t n0 = static_cast<int64_t>(r.prompt.size()) - 1;
  s.Truncate(n0);
  SelectionStats st;
  double secs = 0;
  int32_t tok = r.prompt.back();
  Budget cur = budget;
  std::vector<int32_t> out;
  for (size_t i = 0; i < r.answer.size();) {
    auto logits = s.Decode(tok, cur, &st, &secs);
    if (!logits.ok()) {
      std::fprintf(stderr, "%s: %s\n", r.id.c_str(), logits.status().ToString().c_str());
      std::exit(1);
    }
    if (policy != nullptr) {
      auto ls = LogitStatsFromLogits(logits->data(), static_cast<int64_t>(logits->size()));
      if (!ls.ok()) {
        std::fprintf(stderr, "%s: %s\n", r.id.c_str(), ls.status().ToString().c_str());
        std::exit(1);
      }
      const double top1 = ls->top1_prob;
      const EscalationDecision d =
          policy->Step(&state, top1, static_cast<int64_t>(i), budget.sink_blocks, budget.local_blocks);
      if (d.recompute) {
        ++row->recomputed;
        cur = Budget::Total(d.total_blocks, state.causal_blocks, budget.sink_blocks, budget.local_blocks);
        if (d.restart) {  // drop the answer so far, decode it again from the prompt
          out.clear();
          i = 0;
          tok = r.prompt.back();
          s.Truncate(n0);
        } else {  // recompute this step: drop the token it appended
          s.Truncate(n0 + static_cast<int64_t>(i));
        }
        continue;
      }
    }
    tok = tinymodel::Argmax(*logits);
    out.push_back(tok);
    ++i;
  }
  row->kept += static_cast<double>(st.kept_blocks);
  row->causal += static_cast<double>(st.causal_blocks);
  row->attn_seconds += secs;
  return out == r.answer;
}

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s --model DIR --requests FILE.jsonl [--predictor NAME=FILE.json ...] [--label-free NAME ...] "
               "[--threads N] [--json OUT.json]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, requests_path, json_out;
  int threads = 2;
  std::vector<std::pair<std::string, std::string>> predictor_files;
  std::vector<std::string> label_free_names;  // rows that predict without the task label
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--model")
      model_dir = next();
    else if (a == "--label-free")
      label_free_names.push_back(next());
    else if (a == "--requests")
      requests_path = next();
    else if (a == "--threads")
      threads = std::atoi(next().c_str());
    else if (a == "--json")
      json_out = next();
    else if (a == "--predictor") {
      const std::string v = next();
      const auto eq = v.find('=');
      if (eq == std::string::npos) return Usage(argv[0]);
      predictor_files.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else {
      return Usage(argv[0]);
    }
  }
  if (model_dir.empty() || requests_path.empty() || threads < 1) return Usage(argv[0]);

  auto model = tinymodel::Model::Load(model_dir);
  if (!model.ok()) return std::fprintf(stderr, "%s\n", model.status().ToString().c_str()), 1;
  std::vector<Request> reqs;
  {
    std::ifstream in(requests_path);
    if (!in) return std::fprintf(stderr, "cannot open %s\n", requests_path.c_str()), 1;
    std::string line;
    int ln = 0;
    while (std::getline(in, line)) {
      ++ln;
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("prompt") || !j.contains("answer") || !j.contains("task"))
        return std::fprintf(stderr, "%s:%d: not a request record\n", requests_path.c_str(), ln), 1;
      reqs.push_back({j.value("id", std::to_string(ln)), j["task"].get<std::string>(),
                      j["prompt"].get<std::vector<int32_t>>(), j["answer"].get<std::vector<int32_t>>()});
    }
  }
  std::vector<Row> rows;
  rows.emplace_back();
  rows.back().name = "dense";
  for (auto& [name, file] : predictor_files) {
    auto p = LoadPredictor(file);
    if (!p.ok()) return std::fprintf(stderr, "%s: %s\n", file.c_str(), p.status().ToString().c_str()), 1;
    rows.emplace_back();
    rows.back().name = name;
    rows.back().predictor = std::move(*p);
    for (const auto& lf : label_free_names) rows.back().label_free = rows.back().label_free || lf == name;
  }

  ThreadPool pool(threads);
  const auto t_start = std::chrono::steady_clock::now();
  for (size_t ri = 0; ri < reqs.size(); ++ri) {
    const Request& r = reqs[ri];
    const int64_t n = static_cast<int64_t>(r.prompt.size());
    tinymodel::Session s(*model, n + static_cast<int64_t>(r.answer.size()) + 1, 64, &pool);
    std::vector<int32_t> head(r.prompt.begin(), r.prompt.end() - 1);
    if (!s.Prefill(head).ok()) return 1;
    // Features from the dense step at the last prompt token.
    auto logits = s.Decode(r.prompt.back(), Budget::Dense());
    if (!logits.ok()) return 1;
    RequestFeatures f;
    f.context_length = n;
    f.block_size = 64;
    f.task = r.task;
    if (Status st = s.Features(*logits, &f); !st.ok()) return std::fprintf(stderr, "%s\n", st.ToString().c_str()), 1;
    f.extra["answer_length"] = static_cast<double>(r.answer.size());

    bool dense_ok = false;
    for (Row& row : rows) {
      Budget b = Budget::Dense();
      const EscalationPolicy* policy = nullptr;
      EscalationState state;
      if (row.predictor) {
        RequestFeatures rf = f;
        if (row.label_free) rf.task = kTaskUnknown;
        auto pred = row.predictor->Predict(rf);
        if (!pred.ok()) return std::fprintf(stderr, "%s: %s\n", row.name.c_str(), pred.status().ToString().c_str()), 1;
        b = pred->budget;
        policy = EscalationOf(*row.predictor);
        if (policy != nullptr) state = policy->Start(*pred);
      }
      const bool ok = Run(s, r, b, policy, state, &row);
      if (!row.predictor) dense_ok = ok;
      row.correct += ok;
      row.degraded += (dense_ok && !ok) ? 1 : 0;
      row.n += 1;
      row.by_task[r.task].first += ok;
      row.by_task[r.task].second += 1;
    }
    if (ri % 8 == 7 || ri + 1 == reqs.size())
      std::fprintf(stderr, "  %zu/%zu requests (%.0f s)\n", ri + 1, reqs.size(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  }

  const double dense_t = rows[0].attn_seconds;
  std::printf(
      "\n%zu held-out requests, %d threads, ISA %s. Attention time: the sparse attention calls of the\n"
      "decode steps (last prompt token + answer, all layers), selection included.\n\n",
      reqs.size(), threads, IsaName(ActiveIsa()));
  std::printf("| %-22s | %8s | %11s | %14s | %8s | %8s |\n", "predictor", "accuracy", "mean budget", "attn ms / req",
              "speedup", "degraded");
  std::printf("|%s|%s|%s|%s|%s|%s|\n", "------------------------", "----------", "-------------", "----------------",
              "----------", "----------");
  nlohmann::json out = nlohmann::json::array();
  for (const Row& row : rows) {
    const double frac = row.causal > 0 ? row.kept / row.causal : 1.0;
    std::printf("| %-22s | %7.1f%% | %10.1f%% | %14.3f | %7.2fx | %7.1f%% |\n", row.name.c_str(),
                100.0 * row.correct / row.n, 100.0 * frac, 1e3 * row.attn_seconds / row.n, dense_t / row.attn_seconds,
                100.0 * row.degraded / row.n);
    nlohmann::json j = {{"name", row.name},
                        {"accuracy", static_cast<double>(row.correct) / row.n},
                        {"mean_budget_fraction", frac},
                        {"attention_ms_per_request", 1e3 * row.attn_seconds / row.n},
                        {"speedup_vs_dense", dense_t / row.attn_seconds},
                        {"degraded_share", static_cast<double>(row.degraded) / row.n},
                        {"label_free", row.label_free},
                        {"recomputed_steps_per_request", static_cast<double>(row.recomputed) / row.n}};
    for (auto& [task, cn] : row.by_task) j["accuracy_by_task"][task] = static_cast<double>(cn.first) / cn.second;
    out.push_back(j);
  }
  std::printf("\naccuracy by task:\n");
  for (const Row& row : rows) {
    std::printf("  %-22s", row.name.c_str());
    for (auto& [task, cn] : row.by_task) std::printf("  %s %5.1f%%", task.c_str(), 100.0 * cn.first / cn.second);
    std::printf("\n");
  }
  if (!json_out.empty()) std::ofstream(json_out) << out.dump(2) << "\n";
  return 0;
}
