/// The version this build reports (`GET /health`, `shoal --version`).
public enum ShoalVersion {
    public static let current = "0.4.0"
}
