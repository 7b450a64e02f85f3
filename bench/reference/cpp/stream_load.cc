// A neutral load generator for grpc.testing.TestService streaming (bench/compare-streaming.sh), on
// the C++ gRPC library (Debian's libgrpc++ 1.51), so that neither server under test is measured
// with its own stack's client.
//
//   stream_load --target 127.0.0.1:PORT --mode stream|pingpong [-c CONNECTIONS] [--concurrency N]
//               [--warmup SECONDS] [--duration SECONDS] [--api cq|callback] [--threads T]
//
// Modes:
//   stream    StreamingOutputCall with 100 response_parameters of size 10; a new call as each one
//             ends. Latency is per call (start to status).
//   pingpong  FullDuplexCall: long-lived bidi calls, each writes one request ({response_parameters:
//             [{size: 10}], payload of 10 bytes}), reads one response, and repeats. Latency is per
//             round trip. At the end each call half-closes (WritesDone) and waits for its status.
// The N calls are spread over C channels (one HTTP/2 connection each: every channel gets its own
// subchannel pool and a distinct channel argument, so none shares a connection).
//
// Counting: messages are counted when received inside the measured window (after the warm-up,
// before its end); latencies of the operations that started inside it; errors (non-OK statuses by
// name, and "BadResponse" for a message of the wrong size or a stream of the wrong length, or a
// ping-pong call the server ended early) from the end of the warm-up until every call has ended.
// Prints one JSON line with the fields of `conduit bench --json` that the scripts use
// (messages_per_s, latency_ms {p50, p90, p99, p99_9, max}, errors) and exits 0 (1 on bad usage or if
// no channel connects).
//
// APIs (--api), measured pinned to one core against both test servers on 2026-11-21 (a shared,
// busy machine: single runs vary by up to 2x, so only the pattern counts):
//   cq (default)  the async API: T threads (--threads, default 2), each polling its own
//                 CompletionQueue and driving its share of the calls, no locks. With T = 1 the
//                 one thread sat idle much of the time (30-40% of its core, 30-58k ping-pong
//                 msgs/s at 32 in flight, where T = 2 reached 78-100k at 90%+); T = 4 was no
//                 better than 2.
//   callback      ClientReadReactor / ClientBidiReactor, reactions on the library's threads:
//                 about as fast (74-109k ping-pong msgs/s at 32 in flight, 45-72k at 4), but some
//                 runs stalled at 40% of the core (41k) where cq did not.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "grpc/testing/test.grpc.pb.h"

using grpc::testing::StreamingOutputCallRequest;
using grpc::testing::StreamingOutputCallResponse;
using grpc::testing::TestService;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kStreamMessages = 100;
constexpr int kMessageSize = 10;

const char* StatusName(grpc::StatusCode code) {
  static const char* const names[] = {"OK", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded",
                                      "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
                                      "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
                                      "Internal", "Unavailable", "DataLoss", "Unauthenticated"};
  int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? names[i] : "Unknown";
}

struct Settings {
  std::string target;
  std::string mode;
  std::string api = "cq";
  int connections = 1;
  int concurrency = 4;
  int threads = 2;  // --api cq: completion queues, one thread each
  double warmup_s = 10;
  double duration_s = 20;
  Clock::time_point measure_from;
  Clock::time_point stop_at;
  StreamingOutputCallRequest request;
  bool pingpong() const { return mode == "pingpong"; }
};

// What one call slot saw; slots are only merged once every call has ended.
struct Tally {
  long long messages = 0;
  long long ok = 0;
  std::vector<int64_t> latencies_ns;
  std::map<std::string, long long> errors;
  void Error(const Settings& s, const std::string& name) {
    if (Clock::now() >= s.measure_from) ++errors[name];
  }
  void Message(const Settings& s, Clock::time_point now) {
    if (now >= s.measure_from && now < s.stop_at) ++messages;
  }
  void Operation(const Settings& s, Clock::time_point start, Clock::time_point end) {
    if (start >= s.measure_from && start < s.stop_at) {
      ++ok;
      latencies_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
    }
  }
};

bool GoodResponse(const StreamingOutputCallResponse& r) { return r.payload().body().size() == kMessageSize; }

// ---------------------------------------------------------------------------------------------
// Async API: one thread, one CompletionQueue; tags are call pointers with the event in the low bits.

class CqCall {
 public:
  enum Event : uintptr_t { kStarted = 0, kRead = 1, kWrite = 2, kFinished = 3 };
  CqCall(const Settings& s, TestService::Stub* stub, grpc::CompletionQueue* cq, Tally* tally)
      : s_(s), stub_(stub), cq_(cq), tally_(tally) {}
  virtual ~CqCall() = default;
  virtual void Start() = 0;
  // Returns false once this slot has ended for good.
  virtual bool Proceed(Event event, bool ok) = 0;
  void* Tag(Event e) { return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(this) | e); }

 protected:
  const Settings& s_;
  TestService::Stub* stub_;
  grpc::CompletionQueue* cq_;
  Tally* tally_;
  std::unique_ptr<grpc::ClientContext> context_;
  grpc::Status status_;
  StreamingOutputCallResponse response_;
  Clock::time_point started_;
};

class CqStreamCall final : public CqCall {
 public:
  using CqCall::CqCall;
  void Start() override {
    reader_.reset();  // the previous call goes before its context
    context_ = std::make_unique<grpc::ClientContext>();
    received_ = 0;
    bad_ = false;
    started_ = Clock::now();
    reader_ = stub_->PrepareAsyncStreamingOutputCall(context_.get(), s_.request, cq_);
    reader_->StartCall(Tag(kStarted));
  }
  bool Proceed(Event event, bool ok) override {
    switch (event) {
      case kStarted:
        if (!ok) { reader_->Finish(&status_, Tag(kFinished)); return true; }
        reader_->Read(&response_, Tag(kRead));
        return true;
      case kRead:
        if (!ok) { reader_->Finish(&status_, Tag(kFinished)); return true; }
        tally_->Message(s_, Clock::now());
        if (!GoodResponse(response_)) bad_ = true;
        ++received_;
        reader_->Read(&response_, Tag(kRead));
        return true;
      case kFinished: {
        auto end = Clock::now();
        if (!status_.ok()) tally_->Error(s_, StatusName(status_.error_code()));
        else if (bad_ || received_ != kStreamMessages) tally_->Error(s_, "BadResponse");
        else tally_->Operation(s_, started_, end);
        if (end >= s_.stop_at) return false;
        Start();
        return true;
      }
      default:
        return true;
    }
  }

 private:
  std::unique_ptr<grpc::ClientAsyncReader<StreamingOutputCallResponse>> reader_;
  int received_ = 0;
  bool bad_ = false;
};

class CqPingPongCall final : public CqCall {
 public:
  using CqCall::CqCall;
  void Start() override {
    stream_.reset();  // the previous call goes before its context
    context_ = std::make_unique<grpc::ClientContext>();
    closing_ = false;
    pending_ = 0;
    stream_ = stub_->PrepareAsyncFullDuplexCall(context_.get(), cq_);
    stream_->StartCall(Tag(kStarted));
  }
  bool Proceed(Event event, bool ok) override {
    switch (event) {
      case kStarted:
        if (!ok) { stream_->Finish(&status_, Tag(kFinished)); return true; }
        Round();
        return true;
      case kWrite:
        if (closing_) {  // the half-close is done: the status follows
          stream_->Finish(&status_, Tag(kFinished));
          return true;
        }
        if (!ok) failed_ = true;
        if (--pending_ == 0) AfterRound();
        return true;
      case kRead:
        if (!ok) failed_ = true;
        else {
          tally_->Message(s_, Clock::now());
          if (!GoodResponse(response_)) bad_ = true;
        }
        if (--pending_ == 0) AfterRound();
        return true;
      case kFinished:
        if (!status_.ok()) tally_->Error(s_, StatusName(status_.error_code()));
        else if (!closing_ || bad_) tally_->Error(s_, "BadResponse");  // ended early, or a wrong size
        bad_ = false;
        failed_ = false;
        if (Clock::now() >= s_.stop_at) return false;
        Start();
        return true;
    }
    return true;
  }

 private:
  void Round() {
    started_ = Clock::now();
    pending_ = 2;  // the write and the read, both outstanding at once
    stream_->Write(s_.request, Tag(kWrite));
    stream_->Read(&response_, Tag(kRead));
  }
  void AfterRound() {
    if (failed_) {  // the stream broke: its status says why
      stream_->Finish(&status_, Tag(kFinished));
      return;
    }
    auto now = Clock::now();
    tally_->Operation(s_, started_, now);
    if (now >= s_.stop_at) {
      closing_ = true;
      stream_->WritesDone(Tag(kWrite));
      return;
    }
    Round();
  }

  std::unique_ptr<grpc::ClientAsyncReaderWriter<StreamingOutputCallRequest, StreamingOutputCallResponse>> stream_;
  int pending_ = 0;
  bool closing_ = false;
  bool failed_ = false;
  bool bad_ = false;
};

// One CompletionQueue and its thread for the calls first, first + step, ... (every call's events
// are handled by the one thread that polls its queue: no locks).
void RunCqThread(const Settings& s, std::vector<std::unique_ptr<TestService::Stub>>& stubs,
                 std::vector<Tally>& tallies, int first, int step) {
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<CqCall>> calls;
  for (int i = first; i < s.concurrency; i += step) {
    auto* stub = stubs[i % stubs.size()].get();
    if (s.pingpong()) calls.push_back(std::make_unique<CqPingPongCall>(s, stub, &cq, &tallies[i]));
    else calls.push_back(std::make_unique<CqStreamCall>(s, stub, &cq, &tallies[i]));
  }
  for (auto& c : calls) c->Start();
  int active = static_cast<int>(calls.size());
  void* tag;
  bool ok;
  while (active > 0 && cq.Next(&tag, &ok)) {
    auto bits = reinterpret_cast<uintptr_t>(tag);
    auto* call = reinterpret_cast<CqCall*>(bits & ~uintptr_t{3});
    if (!call->Proceed(static_cast<CqCall::Event>(bits & 3), ok)) --active;
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

void RunCq(const Settings& s, std::vector<std::unique_ptr<TestService::Stub>>& stubs, std::vector<Tally>& tallies) {
  int n = std::min(s.threads, s.concurrency);
  std::vector<std::thread> threads;
  for (int t = 1; t < n; ++t) threads.emplace_back(RunCqThread, std::cref(s), std::ref(stubs), std::ref(tallies), t, n);
  RunCqThread(s, stubs, tallies, 0, n);
  for (auto& t : threads) t.join();
}

// ---------------------------------------------------------------------------------------------
// Callback API: reactions run on the library's threads; a slot's reactions never overlap except
// a ping-pong round's write and read completions, joined by an atomic count.

struct Slots {
  std::mutex mu;
  std::condition_variable cv;
  int active = 0;
  void Done() {
    std::lock_guard<std::mutex> lock(mu);
    if (--active == 0) cv.notify_all();
  }
};

class StreamReactor final : public grpc::ClientReadReactor<StreamingOutputCallResponse> {
 public:
  StreamReactor(const Settings& s, TestService::Stub* stub, Tally* tally, Slots* slots)
      : s_(s), stub_(stub), tally_(tally), slots_(slots) {
    started_ = Clock::now();
    stub_->async()->StreamingOutputCall(&context_, &s_.request, this);
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // the status follows in OnDone
    tally_->Message(s_, Clock::now());
    if (!GoodResponse(response_)) bad_ = true;
    ++received_;
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    auto end = Clock::now();
    if (!status.ok()) tally_->Error(s_, StatusName(status.error_code()));
    else if (bad_ || received_ != kStreamMessages) tally_->Error(s_, "BadResponse");
    else tally_->Operation(s_, started_, end);
    if (end < s_.stop_at) new StreamReactor(s_, stub_, tally_, slots_);
    else slots_->Done();
    delete this;
  }

 private:
  const Settings& s_;
  TestService::Stub* stub_;
  Tally* tally_;
  Slots* slots_;
  grpc::ClientContext context_;
  StreamingOutputCallResponse response_;
  Clock::time_point started_;
  int received_ = 0;
  bool bad_ = false;
};

class PingPongReactor final : public grpc::ClientBidiReactor<StreamingOutputCallRequest, StreamingOutputCallResponse> {
 public:
  PingPongReactor(const Settings& s, TestService::Stub* stub, Tally* tally, Slots* slots)
      : s_(s), stub_(stub), tally_(tally), slots_(slots) {
    stub_->async()->FullDuplexCall(&context_, this);
    Round();
    StartCall();
  }
  void OnWriteDone(bool ok) override {
    if (closing_) return;
    if (!ok) failed_ = true;
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) AfterRound();
  }
  void OnReadDone(bool ok) override {
    if (!ok) failed_ = true;
    else {
      tally_->Message(s_, Clock::now());
      if (!GoodResponse(response_)) bad_ = true;
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) AfterRound();
  }
  void OnDone(const grpc::Status& status) override {
    if (!status.ok()) tally_->Error(s_, StatusName(status.error_code()));
    else if (!closing_ || bad_) tally_->Error(s_, "BadResponse");
    if (Clock::now() < s_.stop_at) new PingPongReactor(s_, stub_, tally_, slots_);
    else slots_->Done();
    delete this;
  }

 private:
  void Round() {
    started_ = Clock::now();
    pending_.store(2, std::memory_order_relaxed);
    StartWrite(&s_.request);
    StartRead(&response_);
  }
  void AfterRound() {
    if (failed_) return;  // the stream broke: OnDone reports its status
    auto now = Clock::now();
    tally_->Operation(s_, started_, now);
    if (now >= s_.stop_at) {
      closing_ = true;
      StartWritesDone();
      return;
    }
    Round();
  }

  const Settings& s_;
  TestService::Stub* stub_;
  Tally* tally_;
  Slots* slots_;
  grpc::ClientContext context_;
  StreamingOutputCallResponse response_;
  Clock::time_point started_;
  std::atomic<int> pending_{0};
  bool closing_ = false;              // only touched when no operation is outstanding
  std::atomic<bool> failed_{false};  // the write's and the read's reactions may run at once
  bool bad_ = false;                 // only touched by the read's reactions and OnDone
};

void RunCallback(const Settings& s, std::vector<std::unique_ptr<TestService::Stub>>& stubs,
                 std::vector<Tally>& tallies) {
  Slots slots;
  slots.active = s.concurrency;
  for (int i = 0; i < s.concurrency; ++i) {
    auto* stub = stubs[i % stubs.size()].get();
    if (s.pingpong()) new PingPongReactor(s, stub, &tallies[i], &slots);
    else new StreamReactor(s, stub, &tallies[i], &slots);
  }
  std::unique_lock<std::mutex> lock(slots.mu);
  slots.cv.wait(lock, [&] { return slots.active == 0; });
}

// ---------------------------------------------------------------------------------------------

[[noreturn]] void Usage(const char* why) {
  std::cerr << "stream_load: " << why << "\n"
            << "usage: stream_load --target HOST:PORT --mode stream|pingpong [-c CONNECTIONS] "
               "[--concurrency N] [--warmup S] [--duration S] [--api cq|callback] [--threads T]\n";
  std::exit(1);
}

double Percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return NAN;
  long index = static_cast<long>(std::ceil(p / 100 * sorted.size())) - 1;
  index = std::clamp(index, 0L, static_cast<long>(sorted.size()) - 1);
  return sorted[index] / 1e6;
}

std::string JsonNumber(double v) {
  if (std::isnan(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    auto number = [&](double min) {
      std::string v = value();
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(d >= min)) Usage(("bad value for " + a + ": " + v).c_str());
      return d;
    };
    if (a == "--target") s.target = value();
    else if (a == "--mode") s.mode = value();
    else if (a == "--api") s.api = value();
    else if (a == "-c" || a == "--connections") s.connections = static_cast<int>(number(1));
    else if (a == "--concurrency") s.concurrency = static_cast<int>(number(1));
    else if (a == "--threads") s.threads = static_cast<int>(number(1));
    else if (a == "--warmup") s.warmup_s = number(0);
    else if (a == "--duration") s.duration_s = number(0.001);
    else Usage(("unknown argument " + a).c_str());
  }
  if (s.target.empty()) Usage("--target is required");
  if (s.mode != "stream" && s.mode != "pingpong") Usage("--mode must be stream or pingpong");
  if (s.api != "cq" && s.api != "callback") Usage("--api must be cq or callback");
  if (s.concurrency < s.connections) Usage("--concurrency must be at least -c");

  if (s.pingpong()) {
    s.request.add_response_parameters()->set_size(kMessageSize);
    s.request.mutable_payload()->set_body(std::string(kMessageSize, '\0'));
  } else {
    for (int i = 0; i < kStreamMessages; ++i) s.request.add_response_parameters()->set_size(kMessageSize);
  }

  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<TestService::Stub>> stubs;
  for (int i = 0; i < s.connections; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("conduit.stream_load.channel", i);  // distinct arguments: never a shared subchannel
    auto channel = grpc::CreateCustomChannel(s.target, grpc::InsecureChannelCredentials(), args);
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::cerr << "stream_load: could not connect to " << s.target << "\n";
      return 1;
    }
    channels.push_back(channel);
    stubs.push_back(TestService::NewStub(channel));
  }

  std::vector<Tally> tallies(s.concurrency);
  auto start = Clock::now();
  s.measure_from = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s.warmup_s));
  s.stop_at = s.measure_from + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s.duration_s));
  if (s.api == "cq") RunCq(s, stubs, tallies);
  else RunCallback(s, stubs, tallies);

  Tally all;
  for (auto& t : tallies) {
    all.messages += t.messages;
    all.ok += t.ok;
    all.latencies_ns.insert(all.latencies_ns.end(), t.latencies_ns.begin(), t.latencies_ns.end());
    for (auto& [name, count] : t.errors) all.errors[name] += count;
  }
  std::sort(all.latencies_ns.begin(), all.latencies_ns.end());
  std::ostringstream out;
  out << "{\"method\":\"grpc.testing.TestService/" << (s.pingpong() ? "FullDuplexCall" : "StreamingOutputCall")
      << "\",\"mode\":\"" << s.mode << "\",\"api\":\"" << s.api << "\",\"server\":\"" << s.target
      << "\",\"connections\":" << s.connections << ",\"concurrency\":" << s.concurrency
      << ",\"measured_s\":" << JsonNumber(s.duration_s) << ",\"ok\":" << all.ok << ",\"errors\":{";
  bool first = true;
  for (auto& [name, count] : all.errors) {
    out << (first ? "" : ",") << "\"" << name << "\":" << count;
    first = false;
  }
  out << "},\"calls_per_s\":" << JsonNumber(all.ok / s.duration_s)
      << ",\"messages_per_s\":" << JsonNumber(all.messages / s.duration_s) << ",\"latency_ms\":{"
      << "\"p50\":" << JsonNumber(Percentile(all.latencies_ns, 50))
      << ",\"p90\":" << JsonNumber(Percentile(all.latencies_ns, 90))
      << ",\"p99\":" << JsonNumber(Percentile(all.latencies_ns, 99))
      << ",\"p99_9\":" << JsonNumber(Percentile(all.latencies_ns, 99.9))
      << ",\"max\":" << JsonNumber(Percentile(all.latencies_ns, 100)) << "}}";
  std::cout << out.str() << std::endl;
  return 0;
}
