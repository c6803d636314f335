// keel-resp --coroutine: the request loop of keel-resp (main.cc's Resp
// handler) written as one coroutine per connection, for comparison.
//
// The same behaviour in a straight line: read, run every complete command
// of what came (pipelining), answer with one write, keep a partial command
// for the next read. What the callback version spells out with flags and a
// re-entry from onWritable is implicit here:
//  - backpressure: co_await write() suspends above the high watermark, and
//    input meanwhile waits in the CoConnection's inbox (its cap pauses
//    reading), so a client that pipelines without reading is paused;
//  - the FIN: read() returns every byte sent before it, then EndOfStream,
//    so the commands that came before a FIN are run and answered, then the
//    connection closes. The pipeline's HalfClose handler keeps the
//    connection open (StayOpen) until the coroutine has done so.
// One difference: the leftover of a partial command is copied into
// `pending` (read()'s bytes are lent only until the next suspension); the
// callback version leaves it in the connection's input buffer.
#pragma once

#include <string>
#include <string_view>

#include <keel/coro/CoConnection.h>

#include "RespProtocol.h"
#include "RespStore.h"

namespace keel::resp {

inline Task<> serveCoroutine(CoConnection& conn, RespStore& store) {
  RespParser parser;
  std::string pending;  // a partial command from the previous read
  std::string out;      // the replies of one read, written at once
  for (;;) {
    auto in = co_await conn.read();
    if (!in) {
      // EndOfStream: everything before the FIN has been answered.
      if (in.error() == CoroErrc::EndOfStream) conn.close(CloseReason::PeerClosed);
      co_return;
    }
    std::string_view data(in->data(), in->size());
    if (!pending.empty()) {
      pending.append(data);
      data = pending;
    }
    CloseReason closeWith = CloseReason::LocalClose;
    bool closing = false;
    for (;;) {
      const RespParser::Status status = parser.parse(data);
      if (status == RespParser::Status::Incomplete) break;
      if (status == RespParser::Status::Error) {
        appendError(out, "ERR Protocol error: ", parser.error());
        closing = true;
        closeWith = CloseReason::ProtocolError;
        break;
      }
      // args() are views into `data`: run the command before dropping it.
      if (!parser.args().empty() && store.execute(parser.args(), out) == RespStore::After::Close)
        closing = true;
      data.remove_prefix(parser.consumed());
      if (closing) break;
    }
    if (!closing) {
      // Keep the partial command (it may point into `pending` itself).
      if (data.empty()) {
        pending.clear();
      } else if (data.data() >= pending.data() && data.data() < pending.data() + pending.size()) {
        pending.erase(0, static_cast<std::size_t>(data.data() - pending.data()));
      } else {
        pending.assign(data);
      }
    }
    if (!out.empty()) {
      const Result<void> w = co_await conn.write(out);
      out.clear();
      if (!w) co_return;
    }
    if (closing) {
      conn.close(closeWith);  // after the replies above
      co_return;
    }
  }
}

}  // namespace keel::resp
