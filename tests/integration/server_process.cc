// SPDX-License-Identifier: Apache-2.0
#include "tests/integration/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>
#include <utility>

#include "absl/time/clock.h"

namespace lychee::testing {
namespace {

std::vector<char*> Argv(const std::string& program, const std::vector<std::string>& args) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  return argv;
}

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string ProgramPath(const std::string& program) {
  return program.find('/') == std::string::npos ? BinDir() + "/" + program : program;
}

}  // namespace

std::vector<std::string> LoopbackServerArgs(const std::string& model,
                                            std::vector<std::string> extra) {
  std::vector<std::string> args = {"--model",     model, "--host",      "127.0.0.1",
                                   "--grpc-port", "0",   "--http-port", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string BinDir() {
  const char* dir = std::getenv("LYCHEE_BIN_DIR");
  return dir != nullptr && *dir != '\0' ? dir : "build/bin";
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& args, absl::Duration timeout) {
  const std::string path = BinDir() + "/lychee-server";
  if (access(path.c_str(), X_OK) != 0) return absl::NotFoundError(path + " is not built");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  std::vector<char*> argv = Argv(path, args);
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->pid_ = pid;
  server->reader_ = std::thread(&ServerProcess::ReadLoop, server.get(), fds[0]);

  static const std::regex kGrpc(R"(grpc listening on \S*:(\d+))");
  static const std::regex kHttp(R"(http listening on \S*:(\d+))");
  const absl::Time deadline = absl::Now() + timeout;
  std::unique_lock<std::mutex> lock(server->mu_);
  std::smatch match;
  while (!std::regex_search(server->output_, match, kGrpc)) {
    if (server->eof_ || absl::Now() > deadline) {
      const std::string output = server->output_;
      lock.unlock();
      return absl::UnavailableError("lychee-server did not start:\n" + output);
    }
    server->changed_.wait_for(lock, std::chrono::milliseconds(50));
  }
  server->grpc_port_ = std::stoi(match[1]);
  if (std::regex_search(server->output_, match, kHttp)) server->http_port_ = std::stoi(match[1]);
  return server;
}

ServerProcess::~ServerProcess() {
  // SIGTERM first, so the server exits through its drain and a sanitizer build checks its exit
  // (LeakSanitizer reports at exit); SIGKILL only if it does not stop.
  bool strict_exit = false;
  if (!WaitExit(absl::ZeroDuration()).has_value()) {
    kill(pid_, SIGTERM);
    strict_exit = WaitExit(absl::Seconds(15)).has_value();
    if (!strict_exit) {
      kill(pid_, SIGKILL);
      WaitExit(absl::Seconds(10));
    }
  }
  if (reader_.joinable()) reader_.join();
  // Sanitizer presets set LYCHEE_SERVER_EXIT_STRICT=1: a server that exits non-zero after
  // SIGTERM (a leak or a sanitizer report at shutdown) fails the test process.
  const char* strict = std::getenv("LYCHEE_SERVER_EXIT_STRICT");
  if (strict_exit && strict != nullptr && std::string(strict) == "1" && exit_code_ != 0) {
    std::fprintf(stderr, "lychee-server exited with %d after SIGTERM; its output:\n%s\n",
                 exit_code_.value_or(-1), output_.c_str());
    std::abort();
  }
}

void ServerProcess::ReadLoop(int fd) {
  char buffer[4096];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    std::lock_guard<std::mutex> lock(mu_);
    if (n <= 0) {
      eof_ = true;
      changed_.notify_all();
      break;
    }
    output_.append(buffer, static_cast<size_t>(n));
    changed_.notify_all();
  }
  close(fd);
}

void ServerProcess::Signal(int signal_number) const {
  if (!exit_code_.has_value()) kill(pid_, signal_number);
}

std::optional<int> ServerProcess::WaitExit(absl::Duration timeout) {
  if (exit_code_.has_value()) return exit_code_;
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = DecodeWaitStatus(status);
      return exit_code_;
    }
    if (r < 0 || absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

std::string ServerProcess::output() const {
  std::lock_guard<std::mutex> lock(mu_);
  return output_;
}

bool ServerProcess::WaitForOutput(const std::string& text, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] {
    return output_.find(text) != std::string::npos || eof_;
  }) && output_.find(text) != std::string::npos;
}

ProgramResult RunProgram(const std::string& program, const std::vector<std::string>& args,
                         absl::Duration timeout) {
  ProgramResult result;
  const std::string path = ProgramPath(program);
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return result;
  std::vector<char*> argv = Argv(path, args);
  const pid_t pid = fork();
  if (pid < 0) return result;
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  const absl::Time deadline = absl::Now() + timeout;
  struct pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0 && !killed) {
      kill(pid, SIGKILL);
      killed = true;
    }
    if (poll(fds, 2, left_ms <= 0 ? 100 : static_cast<int>(std::min<int64_t>(left_ms, 1000))) < 0 &&
        errno != EINTR) {
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buffer[4096];
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n > 0) {
        sinks[i]->append(buffer, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = DecodeWaitStatus(status);
  return result;
}

}  // namespace lychee::testing
