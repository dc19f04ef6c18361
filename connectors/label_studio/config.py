"""Labeling configs: which single-choice ``<Choices>`` control holds the label, and what it labels.

Supported (one ``<Choices choice="single">`` control pointing at one object tag):

==========================  ========  ===============================================================
object tag of the Choices    kind      inputs
==========================  ========  ===============================================================
``<Text>``, ``<HyperText>``  text      ``task.data[<value key>]`` (HyperText: the raw HTML)
``<Image>``                  image     the image file the task's URL points at
``<Table>``                  tabular   the numbers in ``task.data[<value key>]``
==========================  ========  ===============================================================

A config with several control tags (or several Choices) needs ``control=<name>``; any other control
(RectangleLabels, Labels, TextArea, ``choice="multiple"``, ...) is refused with a ConnectorError that names
the config's tags. A ``<Choice>``'s class name is its ``alias`` when it has one, else its ``value``.
Pull and push read a project through the same :class:`ClassificationTarget`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from relabel.dataset import InputKind
from relabel.errors import ConnectorError

TEXT_OBJECT_TAGS = ("Text", "HyperText")
IMAGE_OBJECT_TAGS = ("Image",)
TABULAR_OBJECT_TAGS = ("Table",)
SUPPORTED_OBJECT_TAGS = TEXT_OBJECT_TAGS + IMAGE_OBJECT_TAGS + TABULAR_OBJECT_TAGS
LAYOUT_TAGS = frozenset({"View", "Header", "Style", "Collapse", "Filter", "Choice", "Label", "Relation"})
SINGLE_CHOICE_MODES = frozenset({"single", "single-radio"})


@dataclass(frozen=True)
class ObjectTag:
    """An object tag of a labeling config: what the annotator looks at (``<Text name=… value="$text">``)."""

    tag: str
    name: str
    value_key: str | None  # the task-data key after the "$" of ``value``; None when value is not "$key"


@dataclass(frozen=True)
class ChoicesControl:
    """A ``<Choices>`` control: its name, the object tag(s) it labels, its classes in order, its mode."""

    name: str
    to_names: tuple[str, ...]
    choices: tuple[str, ...]
    choice_mode: str


@dataclass(frozen=True)
class LabelingConfig:
    """The parts of a Label Studio labeling config that matter for classification.

    ``objects``: every object tag (has ``name`` and ``value``); ``controls``: ``(tag, name)`` of every control
    tag (has ``toName``), in document order; ``choices``: the parsed ``<Choices>`` controls.
    """

    objects: tuple[ObjectTag, ...]
    controls: tuple[tuple[str, str], ...]
    choices: tuple[ChoicesControl, ...]
    xml: str = field(repr=False, default="")

    def describe_tags(self) -> str:
        """The config's tags for error messages, e.g. ``Image 'img', RectangleLabels 'box'``."""
        parts = [f"{item.tag} {item.name!r}" for item in self.objects]
        parts += [f"{tag} {name!r}" for tag, name in self.controls]
        return ", ".join(parts) if parts else "no object or control tags"

    def object_named(self, name: str) -> ObjectTag | None:
        """The object tag called ``name`` (None if there is none)."""
        return next((item for item in self.objects if item.name == name), None)

    def classification_target(self, control: str | None = None) -> ClassificationTarget:
        """Pick the single-choice ``<Choices>`` control to read labels from, and the object it labels.

        Raises ConnectorError naming the config's tags when the config is not a supported single-choice
        classification, or when it has several controls and ``control`` does not say which one to use.
        """
        if control is None:
            if len(self.controls) > 1:
                names = ", ".join(f"{tag} {name!r}" for tag, name in self.controls)
                raise ConnectorError(
                    f"The labeling config has several control tags ({names}); name the Choices control to "
                    "read labels from (control=... / --control)"
                )
            if not self.choices:
                raise ConnectorError(
                    "The labeling config has no <Choices> control, so it is not a classification project "
                    f"(its tags: {self.describe_tags()}); relabel supports single-choice <Choices> only"
                )
            chosen = self.choices[0]
        else:
            chosen = next((item for item in self.choices if item.name == control), None)
            if chosen is None:
                other = next((tag for tag, name in self.controls if name == control), None)
                if other is not None:
                    raise ConnectorError(
                        f"Control {control!r} is a <{other}>, not a <Choices>; relabel supports "
                        "single-choice "
                        f"classification only (config tags: {self.describe_tags()})"
                    )
                raise ConnectorError(
                    f"The labeling config has no control named {control!r} (its tags: {self.describe_tags()})"
                )
        if chosen.choice_mode not in SINGLE_CHOICE_MODES:
            raise ConnectorError(
                f'<Choices name={chosen.name!r}> has choice="{chosen.choice_mode}"; relabel supports '
                f"single-choice classification only (config tags: {self.describe_tags()})"
            )
        if not chosen.choices:
            raise ConnectorError(f"<Choices name={chosen.name!r}> lists no <Choice> values")
        if len(chosen.to_names) != 1:
            raise ConnectorError(
                f"<Choices name={chosen.name!r}> labels {len(chosen.to_names)} objects "
                f"({', '.join(chosen.to_names)});"
                " relabel needs a Choices control that points at exactly one object tag"
            )
        target_object = self.object_named(chosen.to_names[0])
        if target_object is None:
            raise ConnectorError(
                f"<Choices name={chosen.name!r}> points at toName={chosen.to_names[0]!r}, which is not "
                "an object "
                f"tag of the config (its tags: {self.describe_tags()})"
            )
        if target_object.tag in TEXT_OBJECT_TAGS:
            kind: InputKind = "text"
        elif target_object.tag in IMAGE_OBJECT_TAGS:
            kind = "image"
        elif target_object.tag in TABULAR_OBJECT_TAGS:
            kind = "tabular"
        else:
            raise ConnectorError(
                f"<Choices name={chosen.name!r}> labels a <{target_object.tag}>; relabel reads "
                f"{', '.join(SUPPORTED_OBJECT_TAGS)} objects only (config tags: {self.describe_tags()})"
            )
        if target_object.value_key is None:
            raise ConnectorError(
                f'<{target_object.tag} name={target_object.name!r}> has no value="$field"; relabel '
                "needs to know "
                "which task-data field holds the input"
            )
        return ClassificationTarget(control=chosen, object_tag=target_object, kind=kind)


@dataclass(frozen=True)
class ClassificationTarget:
    """The Choices control labels are read from, the object tag it labels, and the resulting input kind."""

    control: ChoicesControl
    object_tag: ObjectTag
    kind: InputKind

    @property
    def classes(self) -> list[str]:
        """Class names in the order of the config's ``<Choice>`` list."""
        return list(self.control.choices)

    def result(self, label: str, region_id: str | None = None) -> list[dict[str, Any]]:
        """A Label Studio ``result`` list choosing ``label`` with this control (region ``id`` if given)."""
        region: dict[str, Any] = {
            "from_name": self.control.name,
            "to_name": self.object_tag.name,
            "type": "choices",
            "value": {"choices": [label]},
        }
        if region_id is not None:
            region = {"id": region_id, **region}
        return [region]

    def label_of(self, result: Sequence[dict[str, Any]] | None) -> str | None:
        """The first label chosen with this control in an annotation's ``result``, or None (also for a
        result that is not Label Studio's shape: not a list of regions, a region's ``value`` not a dict)."""
        for region in result if isinstance(result, list) else []:
            if not isinstance(region, dict):
                continue
            if region.get("from_name") == self.control.name and region.get("type", "choices") == "choices":
                value = region.get("value")
                choices = value.get("choices") if isinstance(value, dict) else None
                if isinstance(choices, list) and choices and isinstance(choices[0], (str, int, float)):
                    return str(choices[0])
        return None


def parse_labeling_config(xml: str) -> LabelingConfig:
    """Parse a Label Studio labeling config (XML) into its object tags, control tags and Choices controls.

    A ``<Choice>``'s class name is its ``alias`` when it has one (Label Studio then stores the alias in
    results), else its ``value``. Raises ConnectorError if the XML does not parse.
    """
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise ConnectorError(f"The project's labeling config is not valid XML: {error}") from error
    objects: list[ObjectTag] = []
    controls: list[tuple[str, str]] = []
    choices: list[ChoicesControl] = []
    for element in root.iter():
        tag = element.tag
        if tag in LAYOUT_TAGS:
            continue
        name = element.get("name")
        if name is None:
            continue
        to_name = element.get("toName")
        if to_name is not None:
            controls.append((tag, name))
            if tag == "Choices":
                values = []
                for choice in element.iter("Choice"):
                    value = choice.get("alias") or choice.get("value")
                    if value is not None:
                        values.append(value)
                choices.append(
                    ChoicesControl(
                        name=name,
                        to_names=tuple(part.strip() for part in to_name.split(",") if part.strip()),
                        choices=tuple(values),
                        choice_mode=element.get("choice", "single"),
                    )
                )
        elif element.get("value") is not None:
            value = element.get("value", "")
            value_key = value[1:] if value.startswith("$") and len(value) > 1 else None
            objects.append(ObjectTag(tag=tag, name=name, value_key=value_key))
    return LabelingConfig(objects=tuple(objects), controls=tuple(controls), choices=tuple(choices), xml=xml)
