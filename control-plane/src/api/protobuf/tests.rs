use super::*;

/// A minimal protobuf writer, for building bodies as kubectl would.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn varint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }

    fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.varint((field as u64) << 3).varint(v as u64)
    }

    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.varint(((field as u64) << 3) | 2)
            .varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    fn msg(&mut self, field: u32, m: &W) -> &mut Self {
        self.bytes(field, &m.0)
    }

    fn entry(&mut self, field: u32, k: &str, v: &str) -> &mut Self {
        let mut e = W::default();
        e.str(1, k).str(2, v);
        self.msg(field, &e)
    }
}

fn envelope(api_version: &str, kind: &str, raw: &W) -> Vec<u8> {
    let mut tm = W::default();
    tm.str(1, api_version).str(2, kind);
    let mut u = W::default();
    u.msg(1, &tm).msg(2, raw).str(3, "").str(4, "");
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&u.0);
    out
}

/// ObjectMeta as Go writes it: every non-pointer field, empty or not.
fn meta(name: &str) -> W {
    let mut zero_time = W::default();
    zero_time.int(1, ZERO_TIME_SECONDS).int(2, 0);
    let mut m = W::default();
    m.str(1, name)
        .str(2, "")
        .str(3, "")
        .str(5, "")
        .str(6, "")
        .int(7, 0)
        .msg(8, &zero_time)
        .entry(11, "app", "web")
        .entry(11, "empty", "");
    m
}

#[test]
fn a_configmap_as_kubectl_sends_it() {
    let mut cm = W::default();
    cm.msg(1, &meta("settings"))
        .entry(2, "mode", "fast")
        .entry(2, "blank", "");
    let v = decode(&envelope("v1", "ConfigMap", &cm)).expect("decoded");
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "generation": 0,
                         "labels": {"app": "web", "empty": ""}},
            "data": {"mode": "fast", "blank": ""},
        })
    );
}

#[test]
fn services_keep_int_or_string_ports_and_repeated_fields() {
    let mut target = W::default();
    target.int(1, 1).int(2, 0).str(3, "http");
    let mut port = W::default();
    port.str(1, "")
        .str(2, "TCP")
        .int(3, 80)
        .msg(4, &target)
        .int(5, 0);
    let mut spec = W::default();
    spec.msg(1, &port)
        .entry(2, "app", "web")
        .str(3, "")
        .str(4, "NodePort");
    let mut svc = W::default();
    svc.msg(1, &meta("web")).msg(2, &spec);
    let v = decode(&envelope("v1", "Service", &svc)).expect("decoded");
    assert_eq!(v["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(v["spec"]["ports"][0]["port"], 80);
    assert_eq!(v["spec"]["type"], "NodePort");
    assert!(
        v["spec"].get("clusterIP").is_none(),
        "empty strings are unset"
    );
    assert_eq!(v["spec"]["selector"]["app"], "web");
}

#[test]
fn unknown_fields_and_kinds_are_refused_by_name() {
    let mut cm = W::default();
    cm.msg(1, &meta("x")).str(99, "?");
    let e = decode(&envelope("v1", "ConfigMap", &cm)).expect_err("unknown field");
    assert!(e.contains("field 99 of ConfigMap"), "{e}");
    let mut widget = W::default();
    widget.str(1, "something");
    let e = decode(&envelope("v1", "Widget", &widget)).expect_err("unknown kind");
    assert!(e.contains("Widget"), "{e}");
    // An untouched struct of a kind not described is just empty.
    let mut empty = W::default();
    empty.str(1, "").int(2, 0).msg(3, &W::default());
    assert_eq!(
        decode(&envelope("v1", "Widget", &empty)).expect("empty")["kind"],
        "Widget"
    );
    assert!(decode(b"{\"json\": true}").is_err());
    assert!(decode(b"k8s\0\x0a\xff").is_err(), "truncated");
}

#[test]
fn every_referenced_message_type_is_described_or_refused_cleanly() {
    // Each Msg(...) either names a message in the table or decodes to a
    // clear refusal; none may panic.
    for m in messages::ALL {
        for f in m.fields {
            let name = match f.ty {
                Ty::Msg(n) | Ty::MapMsg(n) => n,
                Ty::Rep(Ty::Msg(n)) => n,
                _ => continue,
            };
            if message(name).is_none() {
                let mut w = W::default();
                w.str(1, "x");
                let e = decode_message(name, &w.0).expect_err("unlisted");
                assert!(e.contains(name));
            }
        }
    }
}

#[test]
fn delete_options_and_evictions_as_client_go_sends_them() {
    let mut pre = W::default();
    pre.str(1, "u-1").str(2, "42");
    let mut opts = W::default();
    opts.int(1, 0)
        .msg(2, &pre)
        .int(3, 1)
        .str(4, "Foreground")
        .str(5, "All");
    let v = decode(&envelope("v1", "DeleteOptions", &opts)).expect("decoded");
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1", "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": "u-1", "resourceVersion": "42"},
            "orphanDependents": true,
            "propagationPolicy": "Foreground",
            "dryRun": ["All"],
        })
    );
    // A negative number is ten bytes of varint.
    let mut negative = W::default();
    negative.int(1, -1);
    let v = decode(&envelope("v1", "DeleteOptions", &negative)).expect("decoded");
    assert_eq!(v["gracePeriodSeconds"], -1);
    // kubectl drain's: the pod named, its options present but empty.
    let mut m = W::default();
    m.str(1, "web-1").str(3, "default");
    let mut eviction = W::default();
    eviction.msg(1, &m).msg(2, &W::default());
    let v = decode(&envelope("policy/v1", "Eviction", &eviction)).expect("decoded");
    assert_eq!(
        v,
        json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "web-1", "namespace": "default"},
            "deleteOptions": {},
        })
    );
}
