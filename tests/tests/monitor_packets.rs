//! The monitor's events from the kernel programs, run through BPF_PROG_TEST_RUN: nothing is
//! built while nobody listens; a drop makes one event, with its reason and 5-tuple, while
//! someone does; forwarding makes none; a new masqueraded flow makes one with its
//! translation; a full ring buffer loses events and counts them, and the packets keep
//! their verdicts.

use dataplane::maps::MonitorMaps;
use dataplane_common::{
    DropReason, FlowKey, Hook, IPPROTO_UDP, InterfaceConfig, IpAddress, MonitorEvent, Path,
};
use dataplane_tests::datapath::{
    B_MAC, Fixture, LO, STALE_MAC, TC_ACT_SHOT, UPLINK_ADDR, udp_between, udp_frame,
};

/// The next record of the ring buffer, if any.
fn next_event(monitor: &mut MonitorMaps) -> Option<MonitorEvent> {
    let item = monitor.events.next()?;
    assert_eq!(item.len(), size_of::<MonitorEvent>(), "a record is one MonitorEvent");
    // SAFETY: a whole MonitorEvent, plain data.
    Some(unsafe { item.as_ptr().cast::<MonitorEvent>().read_unaligned() })
}

fn listen(monitor: &mut MonitorMaps, on: bool) {
    monitor.config.set(0, if on { MonitorEvent::LISTENING } else { 0 }, 0).unwrap();
}

fn lost(monitor: &MonitorMaps) -> u64 {
    monitor.lost.get(&0, 0).unwrap().iter().sum()
}

#[test]
fn a_drop_makes_one_event_only_while_someone_listens() {
    let mut fx = Fixture::new(0);
    let mut monitor = fx.datapath.take_monitor_maps().unwrap();
    let to_blue = udp_between(B_MAC, ([10, 1, 0, 2], 5353), ([10, 2, 0, 2], 53));

    let (verdict, _) = fx.run(&to_blue);
    assert_eq!(verdict, TC_ACT_SHOT, "red reached blue");
    assert_eq!(next_event(&mut monitor), None, "an event was built while nobody listened");

    listen(&mut monitor, true);
    let (verdict, _) = fx.run(&to_blue);
    assert_eq!(verdict, TC_ACT_SHOT, "listening changed the verdict");
    let event = next_event(&mut monitor).expect("no event for a drop while someone listens");
    assert_eq!(event.kind, MonitorEvent::DROP, "kind");
    assert_eq!(event.reason, DropReason::Isolation as u8, "reason");
    assert_eq!(event.path, Path::DroppedIsolation as u8, "path");
    assert_eq!(event.hook, Hook::FromContainer as u8, "hook");
    assert_eq!(event.ifindex, LO, "the interface the frame arrived on");
    let expected = FlowKey {
        src: IpAddress::v4([10, 1, 0, 2]),
        dst: IpAddress::v4([10, 2, 0, 2]),
        src_port: 5353u16.to_be(),
        dst_port: 53u16.to_be(),
        proto: IPPROTO_UDP,
        _pad: [0; 3],
    };
    assert_eq!(event.flow, expected, "the 5-tuple as it arrived");
    assert_eq!(next_event(&mut monitor), None, "one drop, one event");

    // Forwarding makes no event.
    fx.run(&udp_frame(STALE_MAC, [10, 1, 0, 2], [10, 1, 0, 3]));
    assert_eq!(fx.count(Path::Forwarded), 1);
    assert_eq!(next_event(&mut monitor), None, "a forwarded packet made an event");

    listen(&mut monitor, false);
    fx.run(&to_blue);
    assert_eq!(next_event(&mut monitor), None, "an event was built once the listener left");
    assert_eq!(fx.count(Path::DroppedIsolation), 3, "every drop counted, listened to or not");
}

#[test]
fn a_drop_on_an_isolated_network_names_its_reason() {
    let isolated = InterfaceConfig::INTERNAL | InterfaceConfig::ISOLATED_V4;
    let mut fx = Fixture::new(isolated);
    let mut monitor = fx.datapath.take_monitor_maps().unwrap();
    listen(&mut monitor, true);
    let to_gateway = udp_between(STALE_MAC, ([10, 1, 0, 2], 5353), ([10, 1, 0, 1], 80));
    assert_eq!(fx.run(&to_gateway).0, TC_ACT_SHOT, "an isolated container reached the gateway's port 80");
    let event = next_event(&mut monitor).expect("no event for an isolated network's drop");
    assert_eq!((event.kind, event.hook), (MonitorEvent::DROP, Hook::FromContainer as u8));
    assert_eq!(event.reason, DropReason::Isolated as u8, "reason");
    assert_eq!(DropReason::Isolated.name(), "isolated", "as `monitor` shows it");
    assert_eq!(event.path, Path::DroppedIsolated as u8, "path");
    assert_eq!(event.flow.dst, IpAddress::v4([10, 1, 0, 1]));
    assert_eq!(event.flow.dst_port, 80u16.to_be());
    assert_eq!(next_event(&mut monitor), None, "one drop, one event");
}

#[test]
fn a_full_ring_buffer_loses_events_never_packets() {
    let mut fx = Fixture::new(0);
    let mut monitor = fx.datapath.take_monitor_maps().unwrap();
    listen(&mut monitor, true);
    let to_blue = udp_between(B_MAC, ([10, 1, 0, 2], 5353), ([10, 2, 0, 2], 53));
    // The ring buffer holds RING_DEFAULT_SIZE bytes, a record takes the event and an 8-byte
    // header: the sends past that many find it full.
    let room = MonitorEvent::RING_DEFAULT_SIZE as u64 / (size_of::<MonitorEvent>() as u64 + 8);
    let sent = room + 100;
    for _ in 0..sent {
        let (verdict, _) = fx.run(&to_blue);
        assert_eq!(verdict, TC_ACT_SHOT);
    }
    assert_eq!(fx.count(Path::DroppedIsolation), sent, "every packet was handled");
    let mut read = 0;
    while next_event(&mut monitor).is_some() {
        read += 1;
    }
    assert!(read > 0 && read <= room, "{read} events read, room for {room}");
    assert_eq!(read + lost(&monitor), sent, "each event was read or counted lost");
}

#[test]
fn a_new_masqueraded_flow_makes_an_event_with_its_translation() {
    let mut fx = Fixture::new(0);
    let mut monitor = fx.datapath.take_monitor_maps().unwrap();
    fx.enable_nat(61000, 61000);
    listen(&mut monitor, true);
    let out = udp_between(STALE_MAC, ([10, 1, 0, 2], 40000), ([192, 0, 2, 9], 53));
    fx.run(&out);
    assert_eq!(fx.count(Path::Masqueraded), 1, "the flow was masqueraded");
    let event = next_event(&mut monitor).expect("no event for a new masqueraded flow");
    assert_eq!(event.kind, MonitorEvent::FLOW, "kind");
    assert_eq!(event.reason, MonitorEvent::MASQUERADE, "translation");
    assert_eq!(event.flow.src, IpAddress::v4([10, 1, 0, 2]), "the container's source");
    assert_eq!(u16::from_be(event.flow.src_port), 40000);
    // The reply comes to the uplink's address and the chosen port.
    assert_eq!(event.reply.dst, IpAddress::v4(UPLINK_ADDR), "the translated source address");
    assert_eq!(u16::from_be(event.reply.dst_port), 61000, "the translated source port");
    assert_eq!(event.reply.src, IpAddress::v4([192, 0, 2, 9]), "the destination");
    // The flow's next packet is no new flow.
    fx.run(&out);
    assert_eq!(next_event(&mut monitor), None, "a known flow made a new-flow event");
}

#[test]
fn while_tracing_a_delivered_flow_makes_one_trace_event_per_second() {
    let mut fx = Fixture::new(0);
    let mut monitor = fx.datapath.take_monitor_maps().unwrap();
    let to_b = udp_between(STALE_MAC, ([10, 1, 0, 2], 5000), ([10, 1, 0, 3], 53));
    let to_b_again = udp_between(STALE_MAC, ([10, 1, 0, 2], 5001), ([10, 1, 0, 3], 53));

    listen(&mut monitor, true);
    fx.run(&to_b);
    assert_eq!(next_event(&mut monitor), None, "a trace event while nobody traces");

    monitor.config.set(0, MonitorEvent::LISTENING | MonitorEvent::TRACING, 0).unwrap();
    for _ in 0..5 {
        fx.run(&to_b);
    }
    let event = next_event(&mut monitor).expect("no trace event for a forwarded flow while tracing");
    assert_eq!(event.kind, MonitorEvent::TRACE, "kind");
    assert_eq!(event.path, Path::Forwarded as u8, "path");
    assert_eq!(event.hook, Hook::FromContainer as u8, "hook");
    assert_eq!(u16::from_be(event.flow.src_port), 5000, "the flow");
    assert_eq!(next_event(&mut monitor), None, "five packets of one flow within a second made more than one");
    fx.run(&to_b_again);
    let other = next_event(&mut monitor).expect("another flow makes its own trace event");
    assert_eq!(u16::from_be(other.flow.src_port), 5001);
    // Drops are no traces: one drop event, as without tracing.
    fx.run(&udp_between(B_MAC, ([10, 1, 0, 2], 5353), ([10, 2, 0, 2], 53)));
    assert_eq!(next_event(&mut monitor).map(|e| e.kind), Some(MonitorEvent::DROP));
    assert_eq!(next_event(&mut monitor), None);
}
