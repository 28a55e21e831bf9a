//! Test guest: a plain WASI command, which implements neither Tidemark world.

fn main() {
    println!("hello from a command, not a processor");
}
