"""Configuration: one TOML file, validated into frozen dataclasses.

Lookup order for the file: ``--config PATH``, then ``$INSPECTD_CONFIG``, then
``./config.toml``, then ``/etc/inspectd/config.toml``; with none of them present the
built-in defaults apply. Unknown keys and bad values raise ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from .errors import ConfigError, ProductNameError
from .imageio import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from .naming import station_name_problem, validate_product_name
from .plant.settings import MetricsSettings, MqttSettings, topic_for

SYSTEM_CONFIG = Path("/etc/inspectd/config.toml")
BACKBONES = ("wide_resnet50_2", "resnet18", "wide_resnet101_2")


@dataclass(frozen=True)
class ProductSettings:
    """How a product is enrolled and scored. Recorded in each model version, so scoring
    always uses the settings the model was built with, not the current file."""

    backbone: Literal["wide_resnet50_2", "resnet18", "wide_resnet101_2"] = "wide_resnet50_2"
    layers: tuple[str, ...] = ("layer2", "layer3")
    # "imagenet" (torchvision download, cached), "random" (tests/demos only) or a path
    # to a local state-dict file for air-gapped machines.
    weights: str = "imagenet"
    weights_seed: int = 0
    # "official": per-layer 3x3 unfold + adaptive average pooling to embed_dim (the
    # reference PatchCore code); "concat": 3x3 average pooling and concatenation.
    aggregation: Literal["official", "concat"] = "official"
    embed_dim: int = 1024
    # Geometry: "square" resizes to size x size; "keep_aspect" makes the short side
    # `size` and keeps the aspect ratio of the enrollment images.
    resize: Literal["square", "keep_aspect"] = "square"
    size: int = 224
    # Optional centre crop after resizing (the paper: resize 256, crop 224). Off by
    # default because line defects often sit at the border.
    center_crop: int | None = None
    # Optional region of interest [x, y, width, height] in source pixels, cut first.
    roi: tuple[int, int, int, int] | None = None
    # Tiles (tiling.py): cut each network input into tile x tile pieces overlapping by
    # tile_overlap pixels, for images too large to score whole. tile_bank "shared"
    # compares every tile with one bank of all good tiles; "per_region" (fixtured
    # parts) compares tile r only with tile r of the good images.
    tile: int | None = None
    tile_overlap: int = 32
    tile_bank: Literal["shared", "per_region"] = "shared"
    coreset_ratio: float = 0.1
    coreset_count: int | None = None  # overrides coreset_ratio when set
    coreset_projection_dim: int = 128
    seed: int = 0
    # Cross-fitting folds (crossfit.py): every good image is in the bank and is scored
    # for the threshold by a bank built from the other folds. 0 holds out
    # `calibration_fraction` of the good images from the bank instead.
    calibration_folds: int = 5
    # Share of good images held out of the bank to calibrate the threshold (folds = 0).
    calibration_fraction: float = 0.2
    false_alarm_rate: float = 0.01
    threshold_mode: Literal["conformal", "best_f1", "miss_rate"] = "conformal"
    target_miss_rate: float = 0.01  # for threshold_mode = "miss_rate" (needs --bad)
    reweight_neighbors: int = 9
    search: Literal["fast", "exact"] = "fast"
    search_dim: int = 128
    search_candidates: int = 16
    blur_sigma: float = 4.0
    batch_size: int = 8
    # Backbone precision: "auto" is bf16 on a CPU with native bf16 matrix instructions
    # (AMX, AVX512-BF16), fp16 on CUDA, fp32 otherwise (inspectd/precision.py).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # "auto" keeps bf16 only when the held-out images' bf16 scores are within this
    # relative difference of their fp32 scores (checked at enrollment).
    precision_tolerance: float = 0.01

    def __post_init__(self) -> None:
        _check(self.size >= 32, "size", "must be at least 32")
        _check(self.embed_dim >= 8, "embed_dim", "must be at least 8")
        _check(0 < self.coreset_ratio <= 1, "coreset_ratio", "must be in (0, 1]")
        _check(self.coreset_count is None or self.coreset_count >= 1, "coreset_count", "must be >= 1")
        _check(self.coreset_projection_dim >= 1, "coreset_projection_dim", "must be >= 1")
        if self.tile is not None:
            _check(self.tile >= 32, "tile", "must be at least 32")
            _check(0 <= self.tile_overlap < self.tile, "tile_overlap", "must be in [0, tile)")
        _check(self.calibration_folds == 0 or self.calibration_folds >= 2, "calibration_folds", "must be 0 or >= 2")
        _check(0 <= self.calibration_fraction < 1, "calibration_fraction", "must be in [0, 1)")
        _check(0 < self.false_alarm_rate < 1, "false_alarm_rate", "must be in (0, 1)")
        _check(0 <= self.target_miss_rate < 1, "target_miss_rate", "must be in [0, 1)")
        _check(self.reweight_neighbors >= 1, "reweight_neighbors", "must be >= 1")
        _check(self.search_dim >= 1, "search_dim", "must be >= 1")
        _check(self.search_candidates >= 1, "search_candidates", "must be >= 1")
        _check(self.blur_sigma >= 0, "blur_sigma", "must be >= 0")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.precision_tolerance >= 0, "precision_tolerance", "must be >= 0")
        _check(len(self.layers) >= 1, "layers", "needs at least one layer")
        for layer in self.layers:
            _check(layer in ("layer1", "layer2", "layer3", "layer4"), "layers", f"unknown layer {layer!r}")
        if self.center_crop is not None:
            _check(0 < self.center_crop <= self.size, "center_crop", "must be in (0, size]")
        if self.roi is not None:
            _check(len(self.roi) == 4 and self.roi[2] > 0 and self.roi[3] > 0 and min(self.roi) >= 0,
                   "roi", "must be [x, y, width, height] with positive width and height")


@dataclass(frozen=True)
class WatchFolder:
    """A camera drop folder and the product its images belong to."""

    path: Path
    product: str
    station: str = ""
    include: tuple[str, ...] = ("*.png", "*.jpg", "*.jpeg", "*.bmp", "*.tif", "*.tiff")
    ignore: tuple[str, ...] = ("*.tmp", "*.part", ".*", "*~")
    recursive: bool = False
    # Network shares (SMB/NFS) deliver no inotify events: poll them instead.
    network_share: bool = False
    after_scoring: Literal["keep", "move", "delete"] = "keep"
    archive_dir: Path | None = None
    mqtt_topic: str = ""  # this station's MQTT topic instead of [mqtt] topic

    def __post_init__(self) -> None:
        _check_product_name(self.product, "product")
        problem = station_name_problem(self.station)
        _check(problem is None, "station", f"{self.station!r} {problem}")
        if self.after_scoring == "move":
            _check(self.archive_dir is not None, "archive_dir", "is required when after_scoring = 'move'")


@dataclass(frozen=True)
class DaemonSettings:
    settle_seconds: float = 1.0
    # A file unchanged this long but still incomplete (or unreadable, or held open by
    # its writer) is taken in as it is and gets its error row.
    incomplete_seconds: float = 60.0
    reconcile_seconds: float = 60.0
    poll_seconds: float = 2.0
    batch_size: int = 8
    max_attempts: int = 3
    save_anomaly_maps: bool = True
    # Bytes of taken-in images kept in memory until they are scored (MiB), and on disk
    # until their row is written (so a file overwritten while queued survives a crash).
    intake_buffer_mb: int = 256
    spool_dir: Path = Path("/var/lib/inspectd/spool")
    # Status file and folder locks (systemd's RuntimeDirectory=inspectd).
    runtime_dir: Path = Path("/run/inspectd")
    # SIGTERM: unfinished work is handed back within this time (the unit allows 60 s).
    stop_timeout_seconds: float = 40.0

    def __post_init__(self) -> None:
        _check(self.settle_seconds >= 0, "settle_seconds", "must be >= 0")
        _check(self.incomplete_seconds >= self.settle_seconds, "incomplete_seconds", "must be >= settle_seconds")
        _check(self.intake_buffer_mb >= 0, "intake_buffer_mb", "must be >= 0")
        _check(5 <= self.stop_timeout_seconds <= 300, "stop_timeout_seconds", "must be between 5 and 300")
        _check(self.reconcile_seconds > 0, "reconcile_seconds", "must be > 0")
        _check(self.poll_seconds > 0, "poll_seconds", "must be > 0")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.max_attempts >= 1, "max_attempts", "must be >= 1")


ROLE_OPERATOR = "operator"  # confirms and overrules the machine's verdicts
ROLE_QUALITY_ENGINEER = "quality_engineer"  # also changes a product's good set and active model
ROLES = (ROLE_OPERATOR, ROLE_QUALITY_ENGINEER)
DEFAULT_TAGS = ("scratch", "spot", "contamination", "crack", "dent", "missing part", "other")


@dataclass(frozen=True)
class Person:
    """Someone who works in the review app: decisions are signed with `name`."""

    name: str
    badge: str = ""  # badge id (typed or scanned at sign-in); optional
    roles: tuple[str, ...] = (ROLE_OPERATOR,)

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()) and len(self.name) <= 128, "name", "must be 1 to 128 characters")
        _check(bool(self.roles), "roles", f"needs at least one of {', '.join(ROLES)}")
        for role in self.roles:
            _check(role in ROLES, "roles", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")

    def may(self, role: str) -> bool:
        """True if this person has *role* (a quality engineer may also do an operator's work)."""
        return role in self.roles or (role == ROLE_OPERATOR and ROLE_QUALITY_ENGINEER in self.roles)


@dataclass(frozen=True)
class ReviewSettings:
    # Items scoring at or above this normalised score (but below 1.0) also go to review.
    band_below_threshold: float = 0.9
    # How the app learns who is working: "auto" asks when `operators` lists people, else
    # uses `operator`, else the login name; "list" and "badge" always ask; "os_user"
    # always takes the login name (a line PC where each operator has an account).
    identify: Literal["auto", "list", "badge", "os_user"] = "auto"
    operators: tuple[Person, ...] = ()
    operator: str = ""  # a fixed name when nobody is listed (a single-user bench)
    unlisted_roles: tuple[str, ...] = (ROLE_OPERATOR,)  # roles of a name that is not listed
    tags: tuple[str, ...] = DEFAULT_TAGS  # defect tags offered (with completion) in the app
    # Decisions not yet stored (database locked or unreachable) are kept here until they
    # are; default: $XDG_STATE_HOME/inspectd (~/.local/state/inspectd).
    unsaved_dir: Path | None = None
    page_size: int = 200
    poll_seconds: float = 1.0

    def __post_init__(self) -> None:
        _check(0 < self.band_below_threshold <= 1, "band_below_threshold", "must be in (0, 1]")
        _check(self.page_size >= 10, "page_size", "must be >= 10")
        _check(self.poll_seconds > 0, "poll_seconds", "must be > 0")
        for role in self.unlisted_roles:
            _check(role in ROLES, "unlisted_roles", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        names = [person.name.casefold() for person in self.operators]
        _check(len(set(names)) == len(names), "operators", "lists a name twice")
        badges = [person.badge for person in self.operators if person.badge]
        _check(len(set(badges)) == len(badges), "operators", "lists a badge id twice")
        _check(all(tag.strip() for tag in self.tags), "tags", "must not contain empty tags")
        _check(self.identify not in ("list", "badge") or bool(self.operators), "identify",
               f"'{self.identify}' needs people in [[review.operators]]")

    def person(self, name_or_badge: str) -> Person | None:
        """The listed person with this name (any case) or badge id."""
        key = name_or_badge.strip()
        for person in self.operators:
            if person.name.casefold() == key.casefold() or (person.badge and person.badge == key):
                return person
        return None

    def person_named(self, name: str) -> Person:
        """The listed person *name*, or an unlisted one with `unlisted_roles`."""
        return self.person(name) or Person(name.strip(), roles=self.unlisted_roles)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        _check(self.max_bytes > 0, "max_bytes", "must be > 0")
        _check(self.max_pixels > 0, "max_pixels", "must be > 0")


@dataclass(frozen=True)
class Config:
    store_dir: Path = Path("/var/lib/inspectd/models")
    database_url: str = "sqlite:////var/lib/inspectd/inspectd.db"
    results_dir: Path = Path("/var/lib/inspectd/results")
    # Where enrollment images of each product are kept for later --add / feedback.
    enroll_dir: Path = Path("/var/lib/inspectd/enroll")
    # An enrollment's feature store (float16, every patch of every image) above this
    # size goes to a memory-mapped file in the product's store folder instead of RAM.
    enroll_memory_mb: int = 4096
    device: str = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    images: ImageLimits = field(default_factory=ImageLimits)
    defaults: ProductSettings = field(default_factory=ProductSettings)
    products: dict[str, ProductSettings] = field(default_factory=dict)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    watch: tuple[WatchFolder, ...] = ()
    # This line PC's own state: the MQTT outbox, results waiting for the database
    # server, verified copies of models from a shared store.
    state_dir: Path = Path("/var/lib/inspectd/state")
    # On a line PC: the plant's shared (often read-only, network) model store. Its
    # newest versions are copied into store_dir, verified, and scored from there.
    shared_store_dir: Path | None = None
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    source: Path | None = None  # the file this was read from, if any

    def __post_init__(self) -> None:
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               "device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        for index, folder in enumerate(self.watch):
            self.mqtt_topic(folder, key=f"watch[{index}].mqtt_topic" if folder.mqtt_topic else "mqtt.topic")

    @property
    def stations(self) -> frozenset[str]:
        """The stations of this line PC's drop folders: the items its daemon claims."""
        return frozenset(folder.station for folder in self.watch)

    def mqtt_topic(self, folder: WatchFolder, key: str = "mqtt.topic") -> str:
        """The MQTT topic of a watched folder's results."""
        return topic_for(folder.mqtt_topic or self.mqtt.topic, station=folder.station, product=folder.product, key=key)

    def product(self, name: str) -> ProductSettings:
        """Settings for a product: its own section, or the defaults."""
        return self.products.get(name, self.defaults)


def find_config_file(explicit: str | Path | None) -> Path | None:
    """The configuration file to use, following the documented lookup order."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path}")
        return path
    env = os.environ.get("INSPECTD_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path} (from $INSPECTD_CONFIG)")
        return path
    for candidate in (Path("config.toml"), SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_config(explicit: str | Path | None = None) -> Config:
    path = find_config_file(explicit)
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from exc
    return parse_config(raw, source=path)


def parse_config(raw: dict[str, Any], source: Path | None = None) -> Config:
    """Validate a parsed TOML document. Relative paths resolve against the file's folder."""
    base = source.parent.resolve() if source is not None else Path.cwd()
    raw = dict(raw)
    defaults_raw = raw.pop("defaults", {})
    products_raw = raw.pop("products", {})
    watch_raw = raw.pop("watch", [])
    defaults = _resolve_weights(_build(ProductSettings, defaults_raw, "defaults", base), base)
    _expect(isinstance(products_raw, dict), "products", "must be a table of product tables")
    products = {}
    for name, section in products_raw.items():
        _check_product_name(name, f"products.{name}")
        _expect(isinstance(section, dict), f"products.{name}", "must be a table")
        product = _build(ProductSettings, section, f"products.{name}", base, start=defaults)
        products[name] = _resolve_weights(product, base)
    _expect(isinstance(watch_raw, list), "watch", "must be an array of tables ([[watch]])")
    watch = tuple(_build(WatchFolder, w, f"watch[{i}]", base) for i, w in enumerate(watch_raw))
    config = _build(Config, raw, "", base)
    return dataclasses.replace(config, defaults=defaults, products=products, watch=watch, source=source,
                               database_url=_resolve_sqlite(config.database_url, base))


def _resolve_sqlite(url: str, base: Path) -> str:
    """A relative SQLite file in the configuration means relative to the file's folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(base / url[len(prefix):])
    return url


def _resolve_weights(settings: ProductSettings, base: Path) -> ProductSettings:
    """A weights file named relative to the configuration file is found next to it."""
    if settings.weights in ("imagenet", "random") or Path(settings.weights).is_absolute():
        return settings
    return dataclasses.replace(settings, weights=str(base / Path(settings.weights).expanduser()))


def _build(cls: type, raw: Any, where: str, base: Path, start: Any = None) -> Any:
    """Build dataclass `cls` from a TOML table, rejecting unknown keys and wrong types.
    With `start`, the table overrides the fields of that existing instance."""
    _expect(isinstance(raw, dict), where or "configuration", "must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        full = f"{where}.{key}" if where else key
        if key not in names or key == "source":
            raise ConfigError(f"unknown configuration key '{full}'")
        values[key] = _convert(value, hints[key], full, base)
    try:
        return dataclasses.replace(start, **values) if start is not None else cls(**values)
    except ConfigError as exc:
        if where and not str(exc).startswith(f"'{where}."):
            raise ConfigError(str(exc).replace("'", f"'{where}.", 1)) from None
        raise


def _convert(value: Any, hint: Any, key: str, base: Path) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        return _convert(value, options[0], key, base)
    if origin is Literal:
        _expect(value in get_args(hint), key, f"must be one of {', '.join(map(repr, get_args(hint)))}")
        return value
    if origin is tuple:
        _expect(isinstance(value, list), key, "must be an array")
        item_type = get_args(hint)[0]
        return tuple(_convert(v, item_type, key, base) for v in value)
    if origin is dict:
        _expect(isinstance(value, dict), key, "must be a table")
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, base)
    if hint is Path:
        _expect(isinstance(value, str) and value != "", key, "must be a non-empty path string")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    if hint is bool:
        _expect(isinstance(value, bool), key, "must be true or false")
        return value
    if hint is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), key, "must be an integer")
        return value
    if hint is float:
        _expect(isinstance(value, (int, float)) and not isinstance(value, bool), key, "must be a number")
        return float(value)
    if hint is str:
        _expect(isinstance(value, str), key, "must be a string")
        return value
    raise ConfigError(f"unsupported type for '{key}'")  # pragma: no cover - schema bug


def _expect(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"'{key}' {message}")


_check = _expect


def _check_product_name(name: Any, key: str) -> None:
    """A product name in the file is a configuration value: ConfigError naming the key."""
    try:
        validate_product_name(name)
    except ProductNameError as exc:
        raise ConfigError(f"'{key}' {exc}") from None
