import Hummingbird
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// Bounds of the answer to a request the router never sees.
enum MalformedRequestLimits {
    /// After answering, the connection's output is closed at once and its input is read and
    /// thrown away for at most this long, so that the client reads the answer before the
    /// connection closes (closing with unread input sends a reset, which can destroy it).
    static let lingerMillisecondsMax: Int64 = 2_000
}

/// What one connection does about requests the router never sees: those NIO's HTTP/1 parser
/// refuses (`HTTPParserError`) and `CONNECT`, after which the parser stops parsing (it takes
/// the rest of the stream for a tunnel). Performs no I/O.
///
/// The answer is the last thing on the connection and goes out in order: after the responses
/// to every request already passed to the application.
struct MalformedRequestMachine: Sendable {
    enum State: Equatable, Sendable {
        /// Requests pass through. `responsesOwed` requests went to the application whose response
        /// has not ended; `requestOpen` while the last one's end has not arrived.
        case serving(responsesOwed: Int, requestOpen: Bool)
        /// The stream failed between requests (or the request was `CONNECT`): `answer` goes out
        /// once the `responsesOwed` have ended. Nothing more goes to the application.
        case answering(APIError, responsesOwed: Int)
        /// The parser failed inside a request the application has: the failure went to the
        /// application (its body read fails, the router answers). The connection closes once the
        /// `responsesOwed` have ended.
        case draining(responsesOwed: Int)
        /// The connection is done: nothing more goes in or out.
        case closing
    }

    /// What the shell does with the event. For an inbound part or error, `.answer` and `.close`
    /// swallow it; for a response part, the part is always written first unless `.drop`.
    enum Directive: Equatable, Sendable {
        case pass
        case drop
        /// Write this error as the connection's last response, then close.
        case answer(APIError)
        case close
    }

    private(set) var state = State.serving(responsesOwed: 0, requestOpen: false)

    mutating func requestHeadReceived(isConnect: Bool) -> Directive {
        guard case .serving(let owed, _) = state else { return .drop }
        guard isConnect else {
            state = .serving(responsesOwed: owed + 1, requestOpen: true)
            return .pass
        }
        return answerAfter(owed, .connectNotSupported)
    }

    mutating func requestBodyReceived() -> Directive {
        guard case .serving = state else { return .drop }
        return .pass
    }

    mutating func requestEndReceived() -> Directive {
        guard case .serving(let owed, _) = state else { return .drop }
        state = .serving(responsesOwed: owed, requestOpen: false)
        return .pass
    }

    mutating func parserFailed(_ error: HTTPParserError) -> Directive {
        guard case .serving(let owed, let requestOpen) = state else { return .drop }
        guard requestOpen else { return answerAfter(owed, APIError(parserError: error)) }
        // The application reads this request's body: it must learn that the body is broken,
        // or it would take a truncated body for a whole one.
        if owed == 0 {
            // Already answered (say 413 from the Content-Length); nothing more to say.
            state = .closing
            return .close
        }
        state = .draining(responsesOwed: owed)
        return .pass
    }

    mutating func responseWritten(isEnd: Bool) -> Directive {
        switch state {
        case .closing:
            return .drop
        case .serving(let owed, let requestOpen):
            if isEnd { state = .serving(responsesOwed: owed - 1, requestOpen: requestOpen) }
            return .pass
        case .answering(let answer, let owed):
            guard isEnd else { return .pass }
            if owed == 1 {
                state = .closing
                return .answer(answer)
            }
            state = .answering(answer, responsesOwed: owed - 1)
            return .pass
        case .draining(let owed):
            guard isEnd else { return .pass }
            if owed == 1 {
                state = .closing
                return .close
            }
            state = .draining(responsesOwed: owed - 1)
            return .pass
        }
    }

    var isServing: Bool {
        if case .serving = state { return true }
        return false
    }

    private mutating func answerAfter(_ owed: Int, _ answer: APIError) -> Directive {
        if owed == 0 {
            state = .closing
            return .answer(answer)
        }
        state = .answering(answer, responsesOwed: owed)
        return .drop
    }

    func checkInvariants() {
        switch state {
        case .serving(let owed, _):
            precondition(owed >= 0, "responses owed below zero: \(state)")
        case .answering(_, let owed), .draining(let owed):
            precondition(owed > 0, "waiting for no response: \(state)")
        case .closing:
            break
        }
    }
}

/// The NIO shell of `MalformedRequestMachine`: one per connection, between Hummingbird's
/// HTTP/1 ↔ HTTPTypes codec and its connection handler (`HTTP1Channel`'s
/// `additionalChannelHandlers`). Requests the router can answer pass through untouched.
///
/// Hummingbird 2.28 answers an `HTTPParserError` itself with an empty 400 (`handleHTTP`), and
/// NIO 2.101 writes every response to `CONNECT` without a body (it treats all of them like the
/// 2xx that opens a tunnel); so both are answered here, with `APIError`'s body.
final class MalformedRequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var machine = MalformedRequestMachine()
    private var sawConnect = false
    private var lingerTimeout: Scheduled<Void>?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let directive: MalformedRequestMachine.Directive
        switch unwrapInboundIn(data) {
        case .head(let head):
            let isConnect = head.method == .connect
            sawConnect = sawConnect || isConnect
            directive = machine.requestHeadReceived(isConnect: isConnect)
        case .body:
            directive = machine.requestBodyReceived()
        case .end:
            directive = machine.requestEndReceived()
        }
        machine.checkInvariants()
        perform(directive, context: context) { context.fireChannelRead(data) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let directive: MalformedRequestMachine.Directive
        if let error = error as? HTTPParserError {
            directive = machine.parserFailed(error)
        } else {
            // After a parser failure the decoder reports every further read as an error too.
            directive = machine.isServing ? .pass : .drop
        }
        machine.checkInvariants()
        perform(directive, context: context) { context.fireErrorCaught(error) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var isEnd = false
        if case .end = unwrapOutboundIn(data) { isEnd = true }
        let directive = machine.responseWritten(isEnd: isEnd)
        machine.checkInvariants()
        if directive == .drop {
            // The application writes after its connection was answered or failed; say so.
            promise?.fail(ChannelError.outputClosed)
            return
        }
        context.write(data, promise: promise)
        perform(directive, context: context) {}
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Lingering after the answer: the client has read it and closed its side.
        if case .closing = machine.state, let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        lingerTimeout?.cancel()
        lingerTimeout = nil
        context.fireChannelInactive()
    }

    private func perform(_ directive: MalformedRequestMachine.Directive, context: ChannelHandlerContext, pass: () -> Void) {
        switch directive {
        case .pass:
            pass()
        case .drop:
            break
        case .answer(let error):
            answer(error, context: context)
        case .close:
            context.flush()
            closeAfterLinger(context: context)
        }
    }

    private func answer(_ error: APIError, context: ChannelHandlerContext) {
        if sawConnect { replaceResponseEncoder(context: context) }
        do {
            let (answerHead, body) = try error.responseParts()
            var head = answerHead
            head.headerFields[.contentLength] = String(body.readableBytes)
            head.headerFields[.connection] = "close"
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(body)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } catch {
            // JSON encoding of two strings does not fail; if it ever does, closing still tells
            // the client that its request went nowhere.
        }
        closeAfterLinger(context: context)
    }

    /// Closes the output now (the client reads the answer, then end of stream) and the whole
    /// connection when the client closes its side, or after `lingerMillisecondsMax`.
    private func closeAfterLinger(context: ChannelHandlerContext) {
        context.close(mode: .output, promise: nil)
        let channel = context.channel
        lingerTimeout = context.eventLoop.scheduleTask(in: .milliseconds(MalformedRequestLimits.lingerMillisecondsMax)) {
            channel.close(promise: nil)
        }
    }

    /// NIO's response encoder learns each request's method from the decoder and writes any
    /// response to `CONNECT` without its body and `Content-Length` — right for the 2xx that
    /// opens a tunnel, wrong for a refusal (RFC 9110 §9.3.6 forbids framing only on a 2xx). The
    /// answer to `CONNECT` is the connection's last response, so it goes through a fresh
    /// encoder that knows of no request.
    private func replaceResponseEncoder(context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        guard let encoder = try? pipeline.handler(type: HTTPResponseEncoder.self) else { return }
        do {
            try pipeline.addHandler(HTTPResponseEncoder(), position: .after(encoder))
            pipeline.removeHandler(encoder, promise: nil)
        } catch {
            // Without a fresh encoder the answer goes out with its status but no body.
        }
    }
}
