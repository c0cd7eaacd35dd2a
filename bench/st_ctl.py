#!/usr/bin/env python3
"""Drives two syncthing daemons for bench/node_bench.sh (stdlib only).

  st_ctl.py setup STATE A_DIR B_DIR   make homes A and B sharing folder 'bench'
  st_ctl.py wait-ready STATE          wait until both answer and see each other
  st_ctl.py unpause STATE             start syncing (the folder starts paused)
  st_ctl.py scan STATE A|B            rescan that side's folder now
  st_ctl.py shutdown STATE

Loopback only: listen on 127.0.0.1, REST on 127.0.0.1; global and local
discovery, relays, NAT traversal, upgrades, usage and crash reports are off.
The folder has no watcher and no periodic rescan: the bench asks for each
scan, which is the fastest syncthing can be told about a change.
"""
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

FOLDER = "bench"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def state_file(state):
    return os.path.join(state, "st.json")


def load(state):
    with open(state_file(state)) as f:
        return json.load(f)


def call(node, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        "http://127.0.0.1:%d%s" % (node["rest"], path), data=data, method=method,
        headers={"X-API-Key": node["key"], "Content-Type": "application/json"})
    with NO_PROXY.open(request, timeout=600) as response:
        text = response.read().strip()
    return json.loads(text) if text else None


def ports(count):
    held = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
    numbers = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    return numbers


def option(options, name, value):
    element = options.find(name)
    if element is None:
        element = ET.SubElement(options, name)
    element.text = value


def configure(node, other):
    path = os.path.join(node["home"], "config.xml")
    tree = ET.parse(path)
    root = tree.getroot()
    gui = root.find("gui")
    gui.set("enabled", "true")
    gui.set("tls", "false")
    gui.find("address").text = "127.0.0.1:%d" % node["rest"]
    gui.find("apikey").text = node["key"]
    options = root.find("options")
    for element in options.findall("listenAddress"):
        options.remove(element)
    listen = ET.Element("listenAddress")
    listen.text = "tcp://127.0.0.1:%d" % node["listen"]
    options.insert(0, listen)
    settings = {
        "globalAnnounceEnabled": "false", "localAnnounceEnabled": "false",
        "relaysEnabled": "false", "natEnabled": "false", "startBrowser": "false",
        "urAccepted": "-1", "urSeen": "3", "autoUpgradeIntervalH": "0",
        "crashReportingEnabled": "false", "stunKeepaliveStartS": "0",
        "stunKeepaliveMinS": "0", "announceLANAddresses": "false",
        "setLowPriority": "false", "reconnectionIntervalS": "1",
    }
    for name, value in settings.items():
        option(options, name, value)
    device = ET.SubElement(root, "device", {
        "id": other["id"], "name": other["name"], "compression": "metadata",
        "introducer": "false", "skipIntroductionRemovals": "false", "introducedBy": ""})
    ET.SubElement(device, "address").text = "tcp://127.0.0.1:%d" % other["listen"]
    ET.SubElement(device, "paused").text = "false"
    ET.SubElement(device, "autoAcceptFolders").text = "false"
    folder = ET.Element("folder", {
        "id": FOLDER, "label": FOLDER, "path": node["dir"], "type": "sendreceive",
        "rescanIntervalS": "0", "fsWatcherEnabled": "false", "fsWatcherDelayS": "10",
        "ignorePerms": "false", "autoNormalize": "true"})
    for device_id in (node["id"], other["id"]):
        ET.SubElement(folder, "device", {"id": device_id, "introducedBy": ""})
    ET.SubElement(folder, "paused").text = "true"
    root.insert(0, folder)
    tree.write(path)


def setup(state, a_dir, b_dir):
    os.makedirs(state, exist_ok=True)
    numbers = ports(4)
    nodes = []
    for i, (name, folder) in enumerate((("A", a_dir), ("B", b_dir))):
        home = os.path.join(state, "home" + name)
        out = subprocess.run(["syncthing", "generate", "--home=" + home, "--no-default-folder"],
                             capture_output=True, text=True, check=True,
                             env=dict(os.environ, STNOUPGRADE="1"))
        found = re.search(r"Device ID:\s*([A-Z0-9-]{50,})", out.stdout + out.stderr)
        if not found:
            sys.exit("syncthing generate printed no device id")
        os.makedirs(os.path.join(folder, ".stfolder"), exist_ok=True)
        nodes.append({"name": name, "home": home, "dir": os.path.abspath(folder),
                      "rest": numbers[2 * i], "listen": numbers[2 * i + 1],
                      "key": secrets.token_hex(16), "id": found.group(1)})
    configure(nodes[0], nodes[1])
    configure(nodes[1], nodes[0])
    with open(state_file(state), "w") as f:
        json.dump(nodes, f)


def wait_ready(state):
    nodes = load(state)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if all(any(c.get("connected") for c in call(n, "GET", "/rest/system/connections")
                       ["connections"].values()) for n in nodes):
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("syncthing daemons did not connect within 120 s")


def main():
    command, state = sys.argv[1], sys.argv[2]
    if command == "setup":
        setup(state, sys.argv[3], sys.argv[4])
    elif command == "wait-ready":
        wait_ready(state)
    elif command == "unpause":
        for node in load(state):
            call(node, "PATCH", "/rest/config/folders/" + FOLDER, {"paused": False})
    elif command == "scan":
        node = next(n for n in load(state) if n["name"] == sys.argv[3])
        call(node, "POST", "/rest/db/scan?folder=" + FOLDER)
    elif command == "shutdown":
        for node in load(state):
            try:
                call(node, "POST", "/rest/system/shutdown")
            except OSError:
                pass
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
