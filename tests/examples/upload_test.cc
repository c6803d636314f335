// keel-upload: the example's own client, socat and a plain socket each
// stream bytes, half-close, and must get back "<bytes> <fnv1a64 hex>" after
// their FIN, with nothing lost either way.
#include <gtest/gtest.h>

#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "support/Child.h"
#include "support/TestNet.h"

namespace keel::test {
namespace {

using namespace std::chrono_literals;

// The expected answer, computed here independently of the example.
std::string answerFor(const std::string& data) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : data) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  char out[48];
  std::snprintf(out, sizeof out, "%zu %016" PRIx64, data.size(), h);
  return out;
}

class UploadExample : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ =
        std::make_unique<Child>(std::vector<std::string>{binaryPath("keel-upload"), "server", "--port", "0"});
    port_ = awaitListening(*server_);
    ASSERT_NE(port_, 0) << server_->stderrText();
  }
  void TearDown() override {
    EXPECT_EQ(server_->terminate(), 0) << server_->stderrText();
    for (const auto& f : files_) ::unlink(f.c_str());
  }
  std::string writeFile(const std::string& data) {
    const std::string path =
        "/tmp/keel-upload-test-" + std::to_string(::getpid()) + "-" + std::to_string(files_.size());
    std::ofstream(path, std::ios::binary) << data;
    files_.push_back(path);
    return path;
  }
  std::unique_ptr<Child> server_;
  std::uint16_t port_ = 0;
  std::vector<std::string> files_;
};

TEST_F(UploadExample, OwnClientWithEmptyOneByteAndEightMiBFiles) {
  for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{8} << 20}) {
    SCOPED_TRACE(size);
    const std::string data = randomBytes(size, static_cast<std::uint32_t>(size + 3));
    const std::string path = writeFile(data);
    Child client({binaryPath("keel-upload"), "client", "--port", std::to_string(port_), "--file", path});
    const std::string out = client.readAll(60s);
    EXPECT_EQ(client.wait(60s), 0) << client.stderrText();
    EXPECT_EQ(out, "server: " + answerFor(data) + "\nmatch\n");
  }
}

TEST_F(UploadExample, SeveralClientsAtOnceEachGetTheirOwnAnswer) {
  std::vector<std::string> datas;
  std::vector<std::unique_ptr<Child>> clients;
  for (int i = 0; i < 4; ++i) {
    datas.push_back(randomBytes(std::size_t{300'000} * static_cast<std::size_t>(i + 1),
                                40u + static_cast<std::uint32_t>(i)));
    clients.push_back(std::make_unique<Child>(std::vector<std::string>{binaryPath("keel-upload"), "client",
                                                                       "--port", std::to_string(port_),
                                                                       "--file", writeFile(datas.back())}));
  }
  for (std::size_t i = 0; i < clients.size(); ++i) {
    EXPECT_EQ(clients[i]->readAll(60s), "server: " + answerFor(datas[i]) + "\nmatch\n");
    EXPECT_EQ(clients[i]->wait(60s), 0) << clients[i]->stderrText();
  }
}

TEST_F(UploadExample, SocatSendsTheFileHalfClosesAndPrintsTheAnswer) {
  if (!haveTool("socat")) GTEST_SKIP() << "socat not installed (scripts/install-deps.sh)";
  for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{8} << 20}) {
    SCOPED_TRACE(size);
    const std::string data = randomBytes(size, static_cast<std::uint32_t>(size + 11));
    ChildOptions opt;
    opt.stdinFile = writeFile(data);
    // At stdin's EOF socat shuts down the socket's write side (the FIN) and
    // keeps reading for up to -t seconds: long enough for the answer.
    Child socat({"socat", "-t", "5", "-", "TCP:127.0.0.1:" + std::to_string(port_)}, opt);
    EXPECT_EQ(socat.readAll(60s), answerFor(data) + "\n");
    EXPECT_EQ(socat.wait(60s), 0) << socat.stderrText();
  }
}

TEST_F(UploadExample, AnswerComesOnlyAfterTheFin) {
  BlockingClient c(SocketAddress::loopback4(port_), 500ms);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.sendAll("part one, "));
  EXPECT_EQ(c.recvExact(1), "") << "no answer before the FIN";
  ASSERT_TRUE(c.sendAll("part two"));
  c.shutdownWrite();
  bool eof = false;
  EXPECT_EQ(c.recvUntilEof(&eof), answerFor("part one, part two") + "\n");
  EXPECT_TRUE(eof) << "the server closes after answering";
}

TEST_F(UploadExample, ClientErrorsAreClear) {
  Child missing(
      {binaryPath("keel-upload"), "client", "--port", std::to_string(port_), "--file", "/nonexistent/x"});
  const auto st = missing.wait();
  ASSERT_TRUE(st.has_value());
  EXPECT_NE(*st, 0);
  EXPECT_NE(missing.stderrText().find("/nonexistent/x"), std::string::npos) << missing.stderrText();

  const std::string path = writeFile("abc");
  Child refused({binaryPath("keel-upload"), "client", "--port", "1", "--file", path});
  EXPECT_EQ(refused.wait(), 1);
  EXPECT_NE(refused.stderrText().find("cannot connect"), std::string::npos) << refused.stderrText();
}

TEST(UploadExampleIdle, StalledUploadIsClosedWithoutAnAnswer) {
  Child server({binaryPath("keel-upload"), "server", "--port", "0", "--idle-timeout-ms", "300"});
  const std::uint16_t port = awaitListening(server);
  ASSERT_NE(port, 0) << server.stderrText();
  BlockingClient c(SocketAddress::loopback4(port), 5000ms);
  ASSERT_TRUE(c.sendAll("the first part, then nothing"));
  bool eof = false;
  EXPECT_EQ(c.recvUntilEof(&eof), "");
  EXPECT_TRUE(eof) << "the server closes a stalled upload";
  EXPECT_EQ(server.terminate(), 0);
}

}  // namespace
}  // namespace keel::test
