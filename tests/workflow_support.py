"""Reading the shipped workflows (``workflows/*.json``, the ComfyUI frontend's UI format).

The UI format stores a node's widget values as a flat list, ``widgets_values``, in the
order the frontend created the widgets. These helpers rebuild that order from a node
class's own definition (``INPUT_TYPES`` / ``input_order``, as the frontend does), turn a
workflow into an API prompt for ComfyUI's executor, and check links and widget slots.

What the frontend (1.27) adds beyond the definition, and these helpers know about:
- a "control after generate" value after an INT named ``seed``/``noise_seed`` (or any
  INT/COMBO with ``control_after_generate``): "fixed", "increment", "decrement", "randomize";
- an "upload" button value ("image") after all inputs when a required COMBO has
  ``image_upload``/``video_upload``/``animated_image_upload``; it also gets an input slot
  of type ``IMAGEUPLOAD``.
"""
from __future__ import annotations

import json
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW_DIR = os.path.join(REPO_ROOT, "workflows")
FRONTEND_ONLY = {"Note", "MarkdownNote"}
PACK_PREFIX = "MotionInversion_"   # the node-ID prefix of this pack's nodes
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")


def load_workflow(name: str) -> dict:
    """``workflows/<name>`` (``.json`` optional) as a dict."""
    if not name.endswith(".json"):
        name += ".json"
    with open(os.path.join(WORKFLOW_DIR, name), encoding="utf-8") as fh:
        return json.load(fh)


def workflow_names() -> list[str]:
    return sorted(n for n in os.listdir(WORKFLOW_DIR) if n.endswith(".json"))


# ------------------------------------------------------------------ node definitions
def input_specs(node_class) -> list[tuple[str, str, dict, bool]]:
    """``(name, type, options, optional)`` per input, in the frontend's order.

    V1 list combos get type ``"COMBO"`` with ``options["options"]`` set; hidden inputs are left out.
    """
    sections = node_class.INPUT_TYPES()
    order = {}
    if hasattr(node_class, "GET_NODE_INFO_V1"):
        order = node_class.GET_NODE_INFO_V1().get("input_order") or {}
    elif hasattr(node_class, "INPUT_ORDER"):
        order = node_class.INPUT_ORDER or {}
    specs = []
    for section in ("required", "optional"):
        inputs = sections.get(section) or {}
        names = [n for n in order.get(section, []) if n in inputs] or list(inputs)
        names += [n for n in inputs if n not in names]
        for name in names:
            spec = inputs[name]
            kind, options = spec[0], (dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {})
            if isinstance(kind, (list, tuple)):
                kind, options["options"] = "COMBO", list(kind)
            specs.append((name, kind, options, section == "optional"))
    return specs


def is_widget(kind, options: dict) -> bool:
    return isinstance(kind, str) and kind in WIDGET_TYPES and not options.get("forceInput")


def _has_control(name: str, kind: str, options: dict) -> bool:
    if kind == "INT":
        flag = options.get("control_after_generate")
        return bool(flag) if flag is not None else name in ("seed", "noise_seed")
    return kind == "COMBO" and bool(options.get("control_after_generate"))


def widget_layout(node_class) -> list[tuple[str, str]]:
    """``(input name, kind)`` per entry of ``widgets_values``; kind: value, control or upload."""
    layout, upload = [], False
    for name, kind, options, optional in input_specs(node_class):
        if not is_widget(kind, options):
            continue
        layout.append((name, "value"))
        if _has_control(name, kind, options):
            layout.append((name, "control"))
        if kind == "COMBO" and not optional and any(options.get(flag) is True for flag in UPLOAD_FLAGS):
            upload = True
    if upload:
        layout.append(("upload", "upload"))
    return layout


def widget_index(node_class, name: str, kind: str = "value") -> int:
    """Position of widget ``name`` (or of its control/upload value) in ``widgets_values``."""
    return widget_layout(node_class).index((name, kind))


def input_slots(node_class) -> list[tuple[str, str, bool]]:
    """``(name, type, is_widget)`` per entry of a node's ``inputs``: sockets first, then widgets."""
    specs = input_specs(node_class)
    slots = [(name, kind, False) for name, kind, options, _opt in specs if not is_widget(kind, options)]
    slots += [(name, kind, True) for name, kind, options, _opt in specs if is_widget(kind, options)]
    if any(kind == "upload" for _name, kind in widget_layout(node_class)):
        slots.append(("upload", "IMAGEUPLOAD", True))
    return slots


def output_types(node_class) -> list[str]:
    return [t if isinstance(t, str) else "COMBO" for t in node_class.RETURN_TYPES]


def _node_class(node: dict, mappings: dict):
    if node["type"] not in mappings:
        raise KeyError(f"node {node['id']}: type {node['type']!r} is not registered in this ComfyUI "
                       "(a missing custom node pack, or a renamed node)")
    return mappings[node["type"]]


# ------------------------------------------------------------------ conversion
def workflow_to_api_prompt(workflow: dict, node_class_mappings: dict) -> dict:
    """The API prompt ``{id: {"class_type", "inputs", "_meta"}}`` of a UI-format workflow."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({node['type']}) is muted or bypassed (mode {node['mode']}); "
                             "shipped workflows keep every node active")
        node_class = _node_class(node, node_class_mappings)
        values = node.get("widgets_values") or []
        if not isinstance(values, list):
            raise ValueError(f"node {node['id']} ({node['type']}): widgets_values is not a list")
        layout = widget_layout(node_class)
        if len(values) != len(layout):
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values, the node has "
                             f"{len(layout)} widgets: {[name for name, _kind in layout]}")
        inputs = {name: value for (name, kind), value in zip(layout, values) if kind == "value"}
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            link = links.get(slot["link"])
            if link is None:
                raise ValueError(f"node {node['id']} input {slot['name']!r} names link {slot['link']}, which is missing")
            inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or node["type"]}}
    return prompt


def set_inputs(prompt: dict, class_type: str, **values) -> list[str]:
    """Set widget inputs on every node of ``class_type``; returns their ids (at least one)."""
    ids = [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]
    if not ids:
        raise KeyError(f"the prompt has no {class_type} node")
    for node_id in ids:
        for name, value in values.items():
            if name not in prompt[node_id]["inputs"] or isinstance(prompt[node_id]["inputs"][name], list):
                raise KeyError(f"{class_type} node {node_id} has no widget input {name!r}")
            prompt[node_id]["inputs"][name] = value
    return ids


# ------------------------------------------------------------------ checks
def _types_match(a, b) -> bool:
    from comfy_execution.validation import validate_node_input

    return a == "*" or b == "*" or validate_node_input(a, b)


def check_links(workflow: dict, node_class_mappings: dict) -> list[str]:
    """Problems with node types and links (an empty list when all is well)."""
    problems = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    classes = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        if node["type"] not in node_class_mappings:
            problems.append(f"node {node['id']}: type {node['type']!r} is not registered")
        else:
            classes[node["id"]] = node_class_mappings[node["type"]]
    seen = set()
    for link in workflow.get("links", []):
        link_id, src, src_slot, dst, dst_slot, link_type = link
        where = f"link {link_id} ({src}:{src_slot} -> {dst}:{dst_slot}, {link_type})"
        if link_id in seen:
            problems.append(f"{where}: duplicate link id")
        seen.add(link_id)
        if src not in classes or dst not in classes:
            problems.append(f"{where}: connects a node that is missing or not registered")
            continue
        outs = output_types(classes[src])
        if not 0 <= src_slot < len(outs) or src_slot >= len(nodes[src].get("outputs") or []):
            problems.append(f"{where}: source slot out of range ({len(outs)} outputs)")
            continue
        if not _types_match(outs[src_slot], link_type):
            problems.append(f"{where}: source output is {outs[src_slot]}")
        if link_id not in (nodes[src]["outputs"][src_slot].get("links") or []):
            problems.append(f"{where}: not listed in the source output's links")
        dst_inputs = nodes[dst].get("inputs") or []
        if not 0 <= dst_slot < len(dst_inputs):
            problems.append(f"{where}: destination slot out of range ({len(dst_inputs)} inputs)")
            continue
        slot = dst_inputs[dst_slot]
        if slot.get("link") != link_id:
            problems.append(f"{where}: destination input {slot.get('name')!r} holds link {slot.get('link')}")
        declared = {name: kind for name, kind, _opts, _opt in input_specs(classes[dst])}
        if slot.get("name") not in declared:
            problems.append(f"{where}: {nodes[dst]['type']} has no input {slot.get('name')!r}")
        elif not _types_match(link_type, declared[slot["name"]]):
            problems.append(f"{where}: input {slot['name']!r} takes {declared[slot['name']]}")
    for node in workflow["nodes"]:
        for slot in node.get("inputs") or []:
            if slot.get("link") is not None and slot["link"] not in seen:
                problems.append(f"node {node['id']} input {slot.get('name')!r}: link {slot['link']} is missing")
        for index, out in enumerate(node.get("outputs") or []):
            for link_id in out.get("links") or []:
                if link_id not in seen:
                    problems.append(f"node {node['id']} output {index}: link {link_id} is missing")
    return problems


def value_problem(value, kind: str, options: dict) -> str | None:
    """Why ``value`` is not valid for a widget of ``kind``/``options`` (None if it is).

    ComfyUI 0.3.64's ``validate_prompt`` only checks V1 list combos, and skips min/max for
    inputs a node's ``validate_inputs`` names (or all of them with ``**kwargs``), so this
    checks every widget the way the frontend constrains it.
    """
    if kind == "COMBO":
        choices = options.get("options") or []
        return None if value in choices else f"{value!r} is not one of {choices[:12]}"
    expected = {"INT": int, "FLOAT": (int, float), "BOOLEAN": bool, "STRING": str}[kind]
    if not isinstance(value, expected) or (kind in ("INT", "FLOAT") and isinstance(value, bool)):
        return f"{value!r} is not a {kind}"
    if kind in ("INT", "FLOAT"):
        if "min" in options and value < options["min"]:
            return f"{value} is below min {options['min']}"
        if "max" in options and value > options["max"]:
            return f"{value} is above max {options['max']}"
        step = options.get("step")
        if kind == "INT" and step and step > 1 and (value - options.get("min", 0) % step) % step:
            return f"{value} is not on the widget's step {step}"
    return None


def check_values(workflow: dict, node_class_mappings: dict) -> list[str]:
    """Problems with widget values (combo choices, types, ranges) versus each node's current definition."""
    problems = []
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node["type"] not in node_class_mappings:
            continue
        node_class = node_class_mappings[node["type"]]
        specs = {name: (kind, options) for name, kind, options, _opt in input_specs(node_class)}
        for (name, kind), value in zip(widget_layout(node_class), node.get("widgets_values") or []):
            if kind == "value":
                why = value_problem(value, *specs[name])
                if why:
                    problems.append(f"node {node['id']} ({node['type']}).{name}: {why}")
    return problems


def check_slots(workflow: dict, node_class_mappings: dict) -> list[str]:
    """Problems with each node's ``inputs``/``outputs`` entries and widget values versus its definition."""
    problems = []
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node["type"] not in node_class_mappings:
            continue
        node_class, label = node_class_mappings[node["type"]], f"node {node['id']} ({node['type']})"
        expected = [(name, kind) for name, kind, _w in input_slots(node_class)]
        found = [(slot.get("name"), slot.get("type")) for slot in node.get("inputs") or []]
        if found != expected:
            problems.append(f"{label}: inputs {found}, the frontend would write {expected}")
        for slot, (_name, _kind, widget) in zip(node.get("inputs") or [], input_slots(node_class)):
            if widget and slot.get("widget", {}).get("name") != slot.get("name"):
                problems.append(f"{label}: input {slot.get('name')!r} lacks its widget entry")
        outs = [out.get("type") for out in node.get("outputs") or []]
        returns = output_types(node_class)
        # The pack's own nodes list exactly what they return. A core node may have gained
        # outputs since the workflow was saved (0.33's PreviewImage and SaveAnimatedWEBP
        # return IMAGE); the frontend adds the new slots on load, so the saved ones must
        # be the definition's first outputs, in order.
        expected = returns if node["type"].startswith(PACK_PREFIX) else returns[:len(outs)]
        if outs != expected:
            problems.append(f"{label}: outputs {outs}, the node returns {returns}")
        values = node.get("widgets_values") or []
        layout = widget_layout(node_class)
        if len(values) != len(layout):
            problems.append(f"{label}: {len(values)} widget values for {len(layout)} widgets")
            continue
        for (name, kind), value in zip(layout, values):
            if kind == "control" and value not in CONTROL_VALUES:
                problems.append(f"{label}: control after generate of {name!r} is {value!r}")
            if kind == "upload" and value != "image":
                problems.append(f"{label}: upload widget value is {value!r}")
        if node.get("properties", {}).get("Node name for S&R") != node["type"]:
            problems.append(f"{label}: properties lack 'Node name for S&R'")
    return problems
