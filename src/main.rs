fn main() {
    std::process::exit(cellctl::run());
}
