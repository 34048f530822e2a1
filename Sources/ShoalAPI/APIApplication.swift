import Hummingbird
import Logging
import ShoalNode

/// Bounds of the API server.
public enum APILimits {
    /// A keep-alive connection idle this long is closed.
    public static let idleTimeoutSeconds: Int64 = 60
}

/// The API as a runnable `Service`: the router of `makeRouter(node:)` served over HTTP/1.1 on
/// `host:port`. With port 0 the system picks a free port; `onListening` gets the bound one.
///
/// Run it in the same `ServiceGroup` as the node, after it: on graceful shutdown the group
/// stops services in reverse order, so the API stops accepting and finishes its requests
/// (uploads included) while the node's store writer still runs.
///
/// Its log of repeated events (every 5xx, and with `debug` every request) is throttled: per
/// kind, five lines per 10 s and then one summary line (`ThrottledLog`).
public func makeAPIApplication(
    node: some NodeAPIBacking,
    host: String,
    port: Int,
    logger: Logger,
    onListening: @escaping @Sendable (_ port: Int) async -> Void = { _ in }
) -> Application<RouterResponder<APIRequestContext>> {
    let log = ThrottledLog(logger: logger)
    var application = Application(
        router: makeRouter(node: node, log: log),
        // `MalformedRequestHandler` answers what never reaches the router (a request the HTTP
        // parser refuses, `CONNECT`) with the same JSON error body as the router's errors.
        server: .http1(configuration: .init(
            additionalChannelHandlers: [MalformedRequestHandler()],
            idleTimeout: .seconds(APILimits.idleTimeoutSeconds))),
        configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: nil),
        onServerRunning: { channel in
            await onListening(channel.localAddress?.port ?? port)
        },
        logger: logger
    )
    application.addServices(log)
    return application
}
