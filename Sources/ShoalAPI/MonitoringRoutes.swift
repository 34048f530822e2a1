import Hummingbird

/// `GET /metrics` (Prometheus text) and `GET /` (the status page), added by `makeRouter`.
///
/// `/metrics` reads the node's figures (`NodeStatus`, the peers' sync streams, the topology) at the moment it
/// is scraped, then answers with the whole registry of `metrics`. A node whose status cannot be
/// read fails the scrape (the `APIError` of the store's failure) instead of exporting stale
/// figures as if they were current.
func addMonitoringRoutes(to router: Router<APIRequestContext>, node: some NodeAPIBacking, metrics: ShoalMetrics) {
    router.get("/metrics") { _, _ in
        let status = try node.status()
        metrics.refresh(from: status, peers: await node.peers(), topology: await node.topology())
        let text = metrics.exposition()
        var buffer = ByteBufferAllocator().buffer(capacity: text.count)
        buffer.writeBytes(text)
        return Response(status: .ok, headers: [.contentType: ShoalMetrics.contentType, .cacheControl: "no-store"],
                        body: ResponseBody(byteBuffer: buffer))
    }
    router.get("/") { _, _ in
        StatusPage.response()
    }
}
