fn main() -> std::process::ExitCode {
    // Logging starts once the command line is read: the daemon's comes from its settings.
    dataplane::cli::main()
}
