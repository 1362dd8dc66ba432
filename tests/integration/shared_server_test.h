// SPDX-License-Identifier: Apache-2.0
// SharedServerTest: one real lychee-server per test suite. SetUpTestSuite starts it with
// Derived::SuiteServerArgs(); every test first checks that it started and afterwards that it is
// still running (whatever a test sent, the server must keep serving); TearDownTestSuite stops it.
//
//   class MyTest : public testing::SharedServerTest<MyTest> {
//    public:
//     static std::vector<std::string> SuiteServerArgs() { return {"--model", ...}; }
//   };
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "tests/integration/server_process.h"

namespace lychee::testing {

template <typename Derived>
class SharedServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = ServerProcess::Start(Derived::SuiteServerArgs());
    if (server.ok()) {
      server_ = *std::move(server);
    } else {
      start_error_ = server.status().ToString();
    }
  }
  static void TearDownTestSuite() {
    server_.reset();
    start_error_.clear();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr) << start_error_; }
  void TearDown() override {
    if (server_ != nullptr) {
      ASSERT_FALSE(server_->WaitExit(absl::ZeroDuration()).has_value()) << server_->output();
    }
  }

  static inline std::unique_ptr<ServerProcess> server_;
  static inline std::string start_error_;
};

}  // namespace lychee::testing
