use super::*;

fn msg(to: &str, len: usize) -> Outgoing<'static> {
    static BYTES: [u8; 70_000] = [0; 70_000];
    Outgoing {
        to: to.parse().unwrap(),
        data: &BYTES[..len],
    }
}

#[test]
fn runs_group_equal_datagrams_to_one_destination() {
    let a = "127.0.0.1:1000";
    let b = "127.0.0.1:2000";
    assert_eq!(gso_run(&[]), 0);
    assert_eq!(gso_run(&[msg(a, 100)]), 1);
    assert_eq!(gso_run(&[msg(a, 100), msg(a, 100), msg(a, 100)]), 3);
    // Another destination ends the run; so does a longer datagram.
    assert_eq!(gso_run(&[msg(a, 100), msg(a, 100), msg(b, 100)]), 2);
    assert_eq!(gso_run(&[msg(a, 100), msg(a, 101)]), 1);
    // A shorter one is the last segment.
    assert_eq!(gso_run(&[msg(a, 100), msg(a, 60), msg(a, 100)]), 2);
    assert_eq!(gso_run(&[msg(a, 100), msg(a, 60), msg(a, 60)]), 2);
    // Empty datagrams never join a run.
    assert_eq!(gso_run(&[msg(a, 0), msg(a, 0)]), 1);
    assert_eq!(gso_run(&[msg(a, 10), msg(a, 0)]), 1);
}

#[test]
fn runs_stay_within_the_kernel_limits() {
    let a = "[::1]:1000";
    let many: Vec<_> = (0..100).map(|_| msg(a, 10)).collect();
    assert_eq!(gso_run(&many), MAX_GSO_SEGMENTS);
    let big: Vec<_> = (0..10).map(|_| msg(a, 16_000)).collect();
    // 4 x 16 000 fits in MAX_GSO_BYTES, 5 would not.
    assert_eq!(gso_run(&big), 4);
    assert_eq!(gso_run(&[msg(a, 65_000), msg(a, 600)]), 1);
}

/// Real sockets: a run sent with GSO arrives as the original datagrams, in order, and
/// without GSO the same; the receiver never sees a merged datagram.
#[test]
fn gso_sends_arrive_as_the_original_datagrams() {
    for wanted in [true, false] {
        let gso = Gso::new(wanted);
        if wanted && cfg!(target_os = "linux") {
            assert!(gso.enabled(), "this Linux kernel should know UDP_SEGMENT");
        }
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx2 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to, to2) = (rx.local_addr().unwrap(), rx2.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..40u8)
            .map(|i| {
                let len = if i == 9 || i == 39 { 50 } else { 1200 };
                vec![i; len]
            })
            .collect();
        let mut msgs: Vec<Outgoing<'_>> =
            payloads.iter().map(|p| Outgoing { to, data: p }).collect();
        // One datagram to another destination in the middle.
        msgs.insert(
            20,
            Outgoing {
                to: to2,
                data: b"other",
            },
        );
        assert_eq!(send_batch(&tx, &msgs, &gso).unwrap(), msgs.len());
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 70_000];
        for p in &payloads {
            let n = rx.recv(&mut buf).unwrap();
            // Not assert_eq: a merged datagram would print kilobytes.
            assert!(
                buf[..n] == p[..],
                "wanted GSO: {wanted}: got {n} bytes of {}, sent {} of {}",
                buf[0],
                p.len(),
                p[0]
            );
        }
        rx2.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let n = rx2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"other");
    }
}
