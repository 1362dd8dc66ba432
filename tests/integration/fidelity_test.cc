// SPDX-License-Identifier: Apache-2.0
// The fidelity harness end to end: lychee-server serving models/lc20m (the long-context model,
// with its calibrated lychee_head_roles.json) on the CPU, and lychee-eval driving needle and
// multi-key needle prompts (eval/tasks.h) through it over gRPC for dense, lychee and prhs, every
// sparse step audited. Checks what the harness reports rather than timings: every request
// answered; dense finds the needle; sparse policies read a fraction of the KV and their certified
// bound is never below the audited exact dropped mass; and the table/JSON agree. Every task's
// prompts build through the CLI (--dry-run, no server), and a bad address or task is a clean
// error. The full grid is docs/FIDELITY.md's commands.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/server_process.h"
#include "tests/integration/shared_server_test.h"

namespace lychee {
namespace {

using json = nlohmann::json;
using testing::ProgramResult;
using testing::RunProgram;

constexpr char kModel[] = "models/lc20m";

class FidelityTest : public testing::SharedServerTest<FidelityTest> {
 public:
  static std::vector<std::string> SuiteServerArgs() {
    return testing::LoopbackServerArgs(kModel, {"--device", "cpu", "--max-num-seqs", "2"});
  }
};

TEST_F(FidelityTest, NeedlePromptsThroughTheServer) {
  const std::string out = (std::filesystem::temp_directory_path() /
                           ("lychee_fidelity_" + std::to_string(getpid()) + ".json"))
                              .string();
  const ProgramResult r = RunProgram("lychee-eval", {"--address",    server_->grpc_address(),
                                                     "--tokenizer",  kModel,
                                                     "--tasks",      "needle,multikey",
                                                     "--lengths",    "1024",
                                                     "--prompts",    "2",
                                                     "--policies",   "dense,lychee,prhs",
                                                     "--budgets",    "256",
                                                     "--audit-rate", "1",
                                                     "--seed",       "5",
                                                     "--json",       out},
                                     absl::Seconds(240));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("| needle | 1024 | lychee | 256 | 2 |"), std::string::npos) << r.out;
  std::ifstream in(out);
  const json doc = json::parse(in);
  EXPECT_NE(r.out.find("| multikey | 1024 | prhs | 256 | 2 |"), std::string::npos) << r.out;
  ASSERT_EQ(doc["table"].size(), 6u);
  for (const json& row : doc["table"]) {
    SCOPED_TRACE(row.dump());
    EXPECT_EQ(row["errors"], 0);
    EXPECT_EQ(row["prompts"], 2);
    if (row["policy"] == "dense") {
      EXPECT_EQ(row["accuracy"], 1.0);  // lc20m retrieves a needle at 1K, among 4 facts too
      EXPECT_EQ(row["kv_read_fraction"], 1.0);
    } else {
      EXPECT_GT(row["kv_read_fraction"].get<double>(), 0.0);
      EXPECT_LT(row["kv_read_fraction"].get<double>(), 1.0);
      EXPECT_GE(row["dropped_mass_exact_max"].get<double>(), 0.0);  // every step audited
    }
  }
  int reports = 0;
  for (const json& req : doc["requests"]) {
    if (!req.contains("policy_report")) continue;
    ++reports;
    const json& p = req["policy_report"];
    SCOPED_TRACE(p.dump());
    EXPECT_GE(p["max_exact"].get<double>(), 0.0);
    EXPECT_LE(p["max_exact"].get<double>(), p["max_bound"].get<double>());
    EXPECT_LE(p["max_bound"].get<double>(), 1.0);
    EXPECT_GT(p["audited_steps"].get<int64_t>(), 0);
  }
  EXPECT_EQ(reports, 8);  // two tasks × two prompts × lychee, prhs
  std::filesystem::remove(out);
}

TEST_F(FidelityTest, EveryTaskBuildsItsPrompts) {
  const ProgramResult r =
      RunProgram("lychee-eval",
                 {"--tokenizer", kModel, "--tasks", "needle,multikey,multivalue,vt,cwe",
                  "--lengths", "1024", "--prompts", "1", "--dry-run"},
                 absl::Seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  for (const char* want :
       {"needle 1024", "multikey 1024", "multivalue 1024", "vt 1024", "cwe 1024",
        "what are all the special magic numbers for", "is the same as the special magic number",
        "most common words in the list? Answer:"}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
  }
  const ProgramResult bad =
      RunProgram("lychee-eval", {"--tokenizer", kModel, "--tasks", "needle,ruler", "--dry-run"},
                 absl::Seconds(60));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("unknown task 'ruler'"), std::string::npos) << bad.err;
}

TEST_F(FidelityTest, UnreachableServerIsACleanError) {
  const ProgramResult r =
      RunProgram("lychee-eval",
                 {"--address", "127.0.0.1:1", "--tokenizer", kModel, "--lengths", "1024",
                  "--prompts", "1", "--policies", "dense", "--timeout", "5"},
                 absl::Seconds(60));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("lychee-eval:"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lychee
