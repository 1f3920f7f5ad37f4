//! One argon2id verification with pophost's parameters (m=19456 KiB, t=2, p=1), N times, on one
//! thread: `argon2_cpu crate N` with the argon2 crate, working memory reused (as pophost's hashing
//! threads run it for hashes libsodium does not take); `argon2_cpu sodium N` through
//! `tenancy::verify_password_in` (libsodium, as pophost verifies its own hashes). Prints the
//! milliseconds per hash; `bench/argon2_cpu.py` runs both in turn with Dovecot's libsodium and
//! compares their CPU time.

use argon2::{Algorithm, Argon2, Block, Params, Version};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "crate".into());
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let started = std::time::Instant::now();
    match mode.as_str() {
        "crate" => {
            let params = Params::new(19456, 2, 1, Some(32)).expect("params");
            let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
            let mut memory = vec![Block::default(); params.block_count()];
            let mut out = [0u8; 32];
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
        }
        "sodium" => {
            // `echo -n bench-pass-1 | argon2 somesaltsomesalt -id -k 19456 -t 2 -p 1 -e`
            let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$R0hYfWpYvQIf1Ofl3qOOM9cfEQVa0CENo8+62XolhUA";
            let mut scratch = tenancy::Scratch::default();
            for _ in 0..n {
                assert!(tenancy::verify_password_in(
                    b"bench-pass-1",
                    hash,
                    &mut scratch
                ));
            }
        }
        other => panic!("unknown mode {other}: crate or sodium"),
    }
    println!(
        "{:.2}",
        started.elapsed().as_secs_f64() * 1000.0 / f64::from(n)
    );
}
