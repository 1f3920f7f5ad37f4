//! One argon2id hash with pophost's parameters (m=19456 KiB, t=2, p=1), N times, as the hashing
//! threads do it (working memory reused): prints the milliseconds per hash. `bench/argon2_cpu.py`
//! runs it in turn with libsodium, the implementation Dovecot verifies with.

use argon2::{Algorithm, Argon2, Block, Params, Version};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let params = Params::new(19456, 2, 1, Some(32)).expect("params");
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut memory = vec![Block::default(); params.block_count()];
    let mut out = [0u8; 32];
    let started = std::time::Instant::now();
    for _ in 0..n {
        argon2
            .hash_password_into_with_memory(
                b"bench-pass-1",
                b"somesaltsomesalt",
                &mut out,
                &mut memory,
            )
            .expect("hash");
    }
    println!(
        "{:.2}",
        started.elapsed().as_secs_f64() * 1000.0 / f64::from(n)
    );
}
