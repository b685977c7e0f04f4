#!/usr/bin/env python3
"""Helpers for conformance/run (standard library only).

  fixtures   --key KEY --src DIR --generated DIR --out DIR
             Turn the example instances that SUSHI compiled from an upstream IG into fixtures:
             OUT/<instance>.json (identifiers replaced per upstream/synthetic-ids.json) and
             OUT/<instance>.provenance.json (repository, commit, FSH path, notes).
  canonicals --ig KEY=DIR... --out FILE
             Extract profile ids -> canonical URLs, extensions, value sets, code systems and the
             fixed codes/units that matter from compiled conformance resources.
  fnr        VALUE...   check Norwegian fødselsnummer / D-nummer check digits (mod 11).
"""
import argparse
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAM = os.path.join(os.path.dirname(HERE), "upstream")

FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.2"
ORGNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"


def fnr_valid(s):
    if not re.fullmatch(r"\d{11}", s or ""):
        return False
    d = [int(c) for c in s]
    w1 = [3, 7, 6, 1, 8, 9, 4, 5, 2]
    w2 = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2]
    k1 = (11 - sum(a * b for a, b in zip(w1, d)) % 11) % 11
    k2 = (11 - sum(a * b for a, b in zip(w2, d[:9] + [k1])) % 11) % 11
    return k1 != 10 and k2 != 10 and d[9] == k1 and d[10] == k2


def orgnr_valid(s):
    if not re.fullmatch(r"\d{9}", s or ""):
        return False
    d = [int(c) for c in s]
    k = (11 - sum(a * b for a, b in zip([3, 2, 7, 6, 5, 4, 3, 2], d)) % 11) % 11
    return k != 10 and d[8] == k


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------ fixtures

def fsh_instances(src):
    """Instance name -> (FSH path relative to the IG root, InstanceOf, Usage)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(src, "input", "fsh", "**", "*.fsh"), recursive=True)):
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
        for block in re.split(r"(?m)^(?=Instance:)", text):
            m = re.match(r"Instance:\s*(\S+)", block)
            if not m:
                continue
            inst_of = re.search(r"(?m)^InstanceOf:\s*(\S+)", block)
            usage = re.search(r"(?m)^Usage:\s*#(\S+)", block)
            found[m.group(1)] = (os.path.relpath(path, src), inst_of.group(1) if inst_of else None,
                                 usage.group(1) if usage else "example")
    return found


def substitute(node, table, texts, done, path="$"):
    """Replace identifier values per table[system][value] and free text per texts."""
    if isinstance(node, dict):
        sysv = node.get("system")
        if isinstance(sysv, str) and isinstance(node.get("value"), str):
            new = table.get(sysv, {}).get(node["value"])
            if new is not None:
                done.append({"path": path + ".value", "system": sysv, "from": node["value"], "to": new})
                node["value"] = new
        for k, v in node.items():
            node[k] = substitute(v, table, texts, done, path + "." + k)
        return node
    if isinstance(node, list):
        return [substitute(v, table, texts, done, "%s[%d]" % (path, i)) for i, v in enumerate(node)]
    if isinstance(node, str):
        out = node
        for old, new in texts.items():
            if old in out:
                out = out.replace(old, new)
        if out != node:
            done.append({"path": path, "from": node, "to": out})
        return out
    return node


def identifier_findings(node, path="$", out=None):
    """Personal and organisation identifiers that fail their check digits."""
    out = [] if out is None else out
    if isinstance(node, dict):
        s, v = node.get("system"), node.get("value")
        if s in (FNR_SYSTEM, DNR_SYSTEM) and isinstance(v, str) and not fnr_valid(v):
            out.append("%s: %r is not a valid fødselsnummer/D-nummer (mod 11)" % (path, v))
        if s == ORGNR_SYSTEM and isinstance(v, str) and not orgnr_valid(v):
            out.append("%s: %r is not a valid organisasjonsnummer (mod 11)" % (path, v))
        for k, v2 in node.items():
            identifier_findings(v2, path + "." + k, out)
    elif isinstance(node, list):
        for i, v2 in enumerate(node):
            identifier_findings(v2, "%s[%d]" % (path, i), out)
    return out


def cmd_fixtures(a):
    pins = load(os.path.join(UPSTREAM, "pins.json"))[a.key]
    ids = load(os.path.join(UPSTREAM, "synthetic-ids.json"))
    notes = load(os.path.join(UPSTREAM, "notes.json")).get(a.key, {})
    table = ids.get("identifiers", {})
    texts = ids.get("text", {})
    commit_file = os.path.join(a.src, "UPSTREAM_COMMIT")
    commit = open(commit_file).read().strip() if os.path.exists(commit_file) else "unknown"
    if commit != pins["commit"]:
        print("warning: %s source is at commit %s, pins.json says %s" % (a.key, commit, pins["commit"]),
              file=sys.stderr)
    by_id = {}
    for path in glob.glob(os.path.join(a.generated, "*.json")):
        res = load(path)
        by_id.setdefault(res.get("id"), []).append(res)
    os.makedirs(a.out, exist_ok=True)
    for old in glob.glob(os.path.join(a.out, "*.json")):
        os.remove(old)
    n = 0
    for name, (fsh, inst_of, usage) in sorted(fsh_instances(a.src).items()):
        if usage != "example":
            continue
        cands = [r for r in by_id.get(name, []) if r.get("resourceType") not in
                 ("StructureDefinition", "ValueSet", "CodeSystem", "ImplementationGuide")]
        if not cands:
            print("warning: %s: no compiled resource for instance %s" % (a.key, name), file=sys.stderr)
            continue
        res = cands[0]
        before = identifier_findings(res)
        done = []
        res = substitute(res, table, texts, done)
        after = identifier_findings(res)
        with open(os.path.join(a.out, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(res, f, ensure_ascii=False, indent=2)
            f.write("\n")
        root = pins.get("root", "")
        prov = {
            "repository": pins["repository"],
            "commit": commit,
            "commit_date": pins["date"],
            "path": (root + "/" if root else "") + fsh.replace(os.sep, "/"),
            "instance": name,
            "instanceOf": inst_of,
            "compiled_with": "SUSHI (fsh-sushi, version in conformance/run) against hl7.fhir.r4.core#4.0.1 rebuilt offline",
            "identifier_substitutions": done,
            "identifier_findings_upstream": before,
            "identifier_findings_after_substitution": after,
            "notes": notes.get(name, []),
        }
        with open(os.path.join(a.out, name + ".provenance.json"), "w", encoding="utf-8") as f:
            json.dump(prov, f, ensure_ascii=False, indent=2)
            f.write("\n")
        n += 1
    print("%s: %d fixture(s) -> %s" % (a.key, n, a.out))


# ------------------------------------------------------------------ canonicals

def fixed_codes(sd):
    """Fixed/pattern codes and units in the differential of a profile."""
    out = []
    for el in sd.get("differential", {}).get("element", []):
        path = el.get("id", el.get("path"))
        for k, v in el.items():
            if not (k.startswith("fixed") or k.startswith("pattern")):
                continue
            if isinstance(v, dict) and "coding" in v:
                for c in v["coding"]:
                    out.append({"element": path, "system": c.get("system"), "code": c.get("code")})
            elif isinstance(v, dict) and ("code" in v or "system" in v):
                out.append({"element": path, "system": v.get("system"), "code": v.get("code")})
            elif isinstance(v, str):
                out.append({"element": path, "value": v})
        b = el.get("binding")
        if b and b.get("strength") == "required" and b.get("valueSet", "").find("hl7.org/fhir/ValueSet/") < 0:
            out.append({"element": path, "binding": b.get("valueSet"), "strength": "required"})
    return out


def cmd_canonicals(a):
    result = {"_comment": "Generated by conformance/tools/upstream.py canonicals from the compiled pinned upstream IGs "
                          "(see pins.json); facts only. Per IG: profile id -> canonical URL, type, parent, the fixed "
                          "codes/units/required bindings of its differential, and those it inherits from an R4 core "
                          "parent (inherited_fixed); extensions; value sets; code systems with their codes."}
    core = {}
    if a.core:
        for path in glob.glob(os.path.join(a.core, "StructureDefinition-*.json")):
            sd = load(path)
            if sd.get("derivation") == "constraint":
                core[sd.get("url")] = sd
    for spec in a.ig:
        key, d = spec.split("=", 1)
        ig = result.setdefault(key, {"profiles": {}, "extensions": {}, "valueSets": {}, "codeSystems": {},
                                     "namingSystems": {}})
        files = sorted(glob.glob(os.path.join(d, "**", "*.json"), recursive=True))
        files += sorted(glob.glob(os.path.join(d, "**", "*.xml"), recursive=True))
        for path in files:
            if path.endswith(".xml"):
                res = xml_summary(path)
                if res is None:
                    continue
            else:
                res = load(path)
            rt = res.get("resourceType")
            if rt == "StructureDefinition":
                entry = {"url": res.get("url"), "type": res.get("type"),
                         "baseDefinition": res.get("baseDefinition"), "version": res.get("version"),
                         "file": os.path.relpath(path, d)}
                if "differential" in res:
                    fc = fixed_codes(res)
                    if fc:
                        entry["fixed"] = fc
                parent = core.get(res.get("baseDefinition"))
                if parent is not None:
                    pf = fixed_codes(parent)
                    if pf:
                        entry["inherited_fixed"] = pf
                if res.get("type") == "Extension" and res.get("derivation") != "specialization":
                    if "context" in res:
                        entry["context"] = [c.get("expression") for c in res["context"]]
                    ig["extensions"][res["id"]] = entry
                else:
                    ig["profiles"][res["id"]] = entry
            elif rt == "ValueSet":
                ig["valueSets"][res["id"]] = {"url": res.get("url")}
            elif rt == "CodeSystem":
                ig["codeSystems"][res["id"]] = {
                    "url": res.get("url"),
                    "codes": {c.get("code"): c.get("display") for c in res.get("concept", [])}}
            elif rt == "NamingSystem":
                ig["namingSystems"][res["id"]] = {"uniqueId": [u.get("value") for u in res.get("uniqueId", [])]}
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=2, sort_keys=True)
        f.write("\n")
    print("canonicals: %s -> %s" % (", ".join("%s: %d profiles" % (k, len(v["profiles"]))
                                              for k, v in result.items() if not k.startswith("_")), a.out))


def xml_summary(path):
    """Just enough of an XML conformance resource for canonicals (id, url, type, codes)."""
    import xml.etree.ElementTree as ET
    ns = "{http://hl7.org/fhir}"
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    rt = root.tag.replace(ns, "")

    def val(node, name):
        e = node.find(ns + name)
        return e.get("value") if e is not None else None

    res = {"resourceType": rt, "id": val(root, "id"), "url": val(root, "url"),
           "type": val(root, "type"), "baseDefinition": val(root, "baseDefinition"),
           "version": val(root, "version"), "derivation": val(root, "derivation")}
    if rt == "CodeSystem":
        res["concept"] = [{"code": val(c, "code"), "display": val(c, "display")}
                          for c in root.iter(ns + "concept")]
    if rt == "NamingSystem":
        res["uniqueId"] = [{"value": val(u, "value")} for u in root.findall(ns + "uniqueId")]
    if rt == "StructureDefinition":
        ctx = [val(c, "expression") for c in root.findall(ns + "context")]
        if ctx:
            res["context"] = [{"expression": c} for c in ctx]
        diff = root.find(ns + "differential")
        if diff is not None:
            els = []
            for el in diff.findall(ns + "element"):
                e = {"id": el.get("id") or val(el, "path")}
                for child in el:
                    tag = child.tag.replace(ns, "")
                    if tag.startswith("fixed") or tag.startswith("pattern"):
                        if child.get("value") is not None:
                            e[tag] = child.get("value")
                        else:
                            codings = [{"system": val(c, "system"), "code": val(c, "code")}
                                       for c in child.iter(ns + "coding")]
                            if codings:
                                e[tag] = {"coding": codings}
                            elif child.find(ns + "code") is not None or child.find(ns + "system") is not None:
                                e[tag] = {"system": val(child, "system"), "code": val(child, "code")}
                    if tag == "binding":
                        e["binding"] = {"strength": val(child, "strength"), "valueSet": val(child, "valueSet")
                                        or val(child, "valueSetReference") or ""}
                els.append(e)
            res["differential"] = {"element": els}
    return res


def cmd_fnr(a):
    bad = 0
    for v in a.values:
        ok = fnr_valid(v)
        bad += not ok
        synthetic = ok and int(v[2]) >= 8
        print("%s %s%s" % (v, "valid" if ok else "INVALID", " (synthetic: month+80)" if synthetic else ""))
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixtures")
    f.add_argument("--key", required=True)
    f.add_argument("--src", required=True)
    f.add_argument("--generated", required=True)
    f.add_argument("--out", required=True)
    c = sub.add_parser("canonicals")
    c.add_argument("--ig", action="append", default=[])
    c.add_argument("--core", help="hl7.fhir.r4.core package folder, for inherited fixed codes")
    c.add_argument("--out", required=True)
    n = sub.add_parser("fnr")
    n.add_argument("values", nargs="+")
    a = p.parse_args()
    return {"fixtures": cmd_fixtures, "canonicals": cmd_canonicals, "fnr": cmd_fnr}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
