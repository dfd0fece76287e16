//! Table tests of sealing, key ids, tampering and the replay window.

use super::*;

fn ring(ids: &[u32]) -> Keyring {
    Keyring::from_raw(ids.iter().map(|&id| (id, [id as u8; 32])).collect()).unwrap()
}

#[test]
fn a_sealed_packet_opens_once_with_any_ring_holding_its_key() {
    let mut s = Sealer::new([7; 16]);
    let p = s.seal(&ring(&[1]), b"hello").unwrap();
    assert_eq!(p.len(), 5 + OVERHEAD_BYTES);
    // A receiver a rotation step ahead (seals with 2, still opens 1) accepts it.
    let mut o = Opener::new();
    assert_eq!(o.open(&ring(&[2, 1]), &p).unwrap(), b"hello");
    assert_eq!(o.open(&ring(&[2, 1]), &p), Err(Dropped::Replayed));
}

#[test]
fn drops_are_classified() {
    let mut s = Sealer::new([7; 16]);
    let good = s.seal(&ring(&[1]), b"payload").unwrap();
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let mut header_flipped = good.clone();
    header_flipped[6] ^= 1; // the sender tag is authenticated too
    let attacker = Keyring::from_raw(vec![(1, [0xAA; 32])]).unwrap();
    let forged = Sealer::new([9; 16]).seal(&attacker, b"forged").unwrap();
    let unknown = Sealer::new([1; 16]).seal(&ring(&[5]), b"x").unwrap();
    let cases: Vec<(&str, Vec<u8>, Result<(), Dropped>)> = vec![
        ("short", vec![1, 2, 3], Err(Dropped::Malformed)),
        (
            "bad version",
            [&[9u8][..], &good[1..]].concat(),
            Err(Dropped::Malformed),
        ),
        ("unknown key", unknown, Err(Dropped::UnknownKey { id: 5 })),
        ("tampered body", flipped, Err(Dropped::Tampered)),
        ("tampered header", header_flipped, Err(Dropped::Tampered)),
        ("other key, same id", forged, Err(Dropped::Tampered)),
        ("good", good, Ok(())),
    ];
    let mut o = Opener::new();
    for (name, packet, want) in cases {
        let got = o.open(&ring(&[1]), &packet).map(|_| ());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn the_replay_window_accepts_reordering_and_refuses_repeats_and_stragglers() {
    let mut s = Sealer::new([3; 16]);
    let k = ring(&[1]);
    let packets: Vec<Vec<u8>> = (0..200).map(|_| s.seal(&k, b"p").unwrap()).collect();
    let mut o = Opener::new();
    // seq n is packets[n - 1].
    let steps: Vec<(usize, Result<(), Dropped>)> = vec![
        (10, Ok(())),
        (8, Ok(())), // reordered, inside the window
        (8, Err(Dropped::Replayed)),
        (10, Err(Dropped::Replayed)),
        (100, Ok(())),
        (37, Ok(())),                 // 63 behind: still inside
        (36, Err(Dropped::Replayed)), // 64 behind: outside
        (101, Ok(())),
        (37, Err(Dropped::Replayed)),
    ];
    for (seq, want) in steps {
        assert_eq!(o.open(&k, &packets[seq - 1]).map(|_| ()), want, "seq {seq}");
    }
}

#[test]
fn forged_packets_do_not_move_a_senders_window() {
    let k = ring(&[1]);
    let mut real = Sealer::new([4; 16]);
    let first = real.seal(&k, b"a").unwrap();
    let second = real.seal(&k, b"b").unwrap();
    // An attacker copies the header with a huge sequence number but cannot authenticate it.
    let mut forged = second.clone();
    forged[21..29].copy_from_slice(&u64::MAX.to_be_bytes());
    let mut o = Opener::new();
    assert_eq!(o.open(&k, &forged), Err(Dropped::Tampered));
    assert!(o.open(&k, &first).is_ok());
    assert!(o.open(&k, &second).is_ok());
}

#[test]
fn the_sender_table_is_bounded() {
    let k = ring(&[1]);
    let mut o = Opener::new();
    for i in 0..(MAX_SENDERS as u32 + 10) {
        let mut tag = [0u8; 16];
        tag[..4].copy_from_slice(&i.to_be_bytes());
        assert!(
            o.open(&k, &Sealer::new(tag).seal(&k, b"x").unwrap())
                .is_ok()
        );
    }
    assert_eq!(o.senders(), MAX_SENDERS);
}
