import Hummingbird

/// Records every answered request in `ShoalMetrics`: method, route pattern, status class and
/// the time until the answer's body was written (a streamed download counts to its end).
///
/// Hummingbird applies router middleware per route after it has matched the path, so
/// `context.endpointPath` holds the pattern (`/chunks/{address}`); a request that matched no
/// route (Hummingbird's not-found responder sets `NotFound` there) is labelled `unmatched`. Raw paths never become label values. Added first, so it
/// wraps `APIErrorMiddleware` and sees every failure as the `APIError` the client gets.
struct APIMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The route label of a request no route matched (404 from the router).
    static var unmatchedRoute: String { "unmatched" }

    let metrics: ShoalMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let method = request.method.rawValue
        let metrics = self.metrics
        @Sendable func record(_ status: Int) {
            let route = context.endpointPath.flatMap { $0.hasPrefix("/") ? $0 : nil } ?? Self.unmatchedRoute
            metrics.apiRequest(method: method, route: route, status: status, seconds: (ContinuousClock.now - start).seconds)
        }
        do {
            var response = try await next(request, context)
            let status = response.status.code
            let body = response.body
            response.body = ResponseBody(contentLength: body.contentLength) { writer in
                do {
                    try await body.write(writer)
                    record(status)
                } catch {
                    // The client went away mid-body: the status it was sent still stands.
                    record(status)
                    throw error
                }
            }
            return response
        } catch let error as any HTTPResponseError {
            record(error.status.code)
            throw error
        } catch {
            record(500)
            throw error
        }
    }
}

extension Duration {
    /// This duration in seconds, as a `Double`.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
