// SPDX-License-Identifier: Apache-2.0
// Test helpers that run the real programs from build/bin (LYCHEE_BIN_DIR, set for every CTest
// test by lychee_cc_test): ServerProcess starts lychee-server, collects its output on a reader
// thread and parses the ports from its startup lines
//   lychee-server: grpc listening on HOST:PORT
//   lychee-server: http listening on HOST:PORT
// and RunProgram runs a short-lived program (lychee-generate, lychee-client) with a timeout.
//
// A ServerProcess always ends its child: the destructor sends SIGTERM if it is still running
// (SIGKILL after 15 s); with LYCHEE_SERVER_EXIT_STRICT=1 (the sanitizer presets) a non-zero exit
// after SIGTERM aborts the test process, so leaks reported at the server's exit fail the test.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace lychee::testing {

// LYCHEE_BIN_DIR, else "build/bin".
std::string BinDir();

// lychee-server flags for a test server: `model` served on 127.0.0.1 with free gRPC and HTTP
// ports (0), followed by `extra`.
std::vector<std::string> LoopbackServerArgs(const std::string& model,
                                            std::vector<std::string> extra = {});

class ServerProcess {
 public:
  // Runs `BinDir()/lychee-server args...` and waits until it logs its gRPC port (the model is
  // then loaded and serving). Fails, with the server's output, if it exits or times out first.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::vector<std::string>& args, absl::Duration timeout = absl::Seconds(60));
  ~ServerProcess();

  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }  // 0 when the server logged no HTTP port
  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  pid_t pid() const { return pid_; }

  void Signal(int signal_number) const;
  // The exit code once the process has exited (128 + n when killed by signal n), or nullopt if
  // it is still running after `timeout`.
  std::optional<int> WaitExit(absl::Duration timeout);
  // Everything the server printed so far (stdout and stderr).
  std::string output() const;
  // Waits until the output contains `text`.
  bool WaitForOutput(const std::string& text, absl::Duration timeout);

 private:
  ServerProcess() = default;
  void ReadLoop(int fd);

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  int grpc_port_ = 0;
  int http_port_ = 0;
  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::string output_;
  bool eof_ = false;
};

struct ProgramResult {
  int exit_code = -1;  // 128 + n when killed by signal n (e.g. on timeout)
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs `program args...` (program is looked up in BinDir() unless it contains a '/'), killing it
// after `timeout`.
ProgramResult RunProgram(const std::string& program, const std::vector<std::string>& args,
                         absl::Duration timeout = absl::Seconds(60));

}  // namespace lychee::testing
