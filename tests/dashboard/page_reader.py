"""Read a dashboard page as a person does: its tables (by section id), cards, errors, links."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Cell:
    text: str = ""
    href: str | None = None
    hint: str | None = None  # the title of a marked count (its listing holds more)


@dataclass
class Page(HTMLParser):
    tables: dict[str, list[list[Cell]]] = field(default_factory=dict)
    cards: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (value, href)
    errors: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (text, href)
    forms: list[dict[str, str]] = field(default_factory=list)  # @action, @method, fields
    bars: list[dict[str, str]] = field(default_factory=list)  # chart segments: series, value, href
    heading: str = ""  # the h1
    groups: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # a table's colgroups

    def __post_init__(self) -> None:
        super().__init__()
        self._section: str | None = None
        self._row: list[Cell] | None = None
        self._cell: Cell | None = None
        self._in_body = False
        self._card: dict[str, str] | None = None
        self._span: str | None = None
        self._link: tuple[str, list[str]] | None = None
        self._in_errors = False
        self._li: list[str] | None = None
        self._h1: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section" and "table" in a.get("class", ""):
            self._section = a["id"]
            self.tables[self._section] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = Cell()
        elif tag == "h1":
            self._h1 = []
        elif tag == "th" and a.get("scope") == "colgroup" and self._section is not None:
            self.groups.setdefault(self._section, []).append(("", int(a["colspan"])))
            self._group = True
        elif tag in ("a", "span") and self._cell is not None and "superset" in a.get("class", ""):
            self._cell.hint = a.get("title")
            if tag == "a":
                self._cell.href = a.get("href")
                self._link = (a.get("href", ""), [])
        elif tag == "a":
            if self._cell is not None:
                self._cell.href = a.get("href")
            if "card" in self._open_classes():
                self._card = {"href": a.get("href", "")}
            self._link = (a.get("href", ""), [])
        elif tag == "span" and self._card is not None:
            self._span = a.get("class")
        elif tag == "li" and "card" in a.get("class", ""):
            self._card_li = True
        elif (tag == "div" and "errors" in a.get("class", "")) or (
            tag == "ul" and "problem-lines" in a.get("class", "")
        ):
            self._in_errors = True  # a page's problems, or an error page's
        elif tag == "li" and self._in_errors:
            self._li = []
        elif tag == "form":
            self.forms.append({"@action": a.get("action", ""), "@method": a.get("method", "get")})
        elif tag in ("input", "select") and self.forms and "name" in a:
            self.forms[-1][a["name"]] = a.get("value", "")
        elif tag == "rect" and "bar" in a.get("class", ""):
            href = self._link[0] if self._link else ""
            self.bars.append({"series": a["data-series"], "value": a["data-value"], "href": href})

    def _open_classes(self) -> str:
        return "card" if getattr(self, "_card_li", False) else ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._cell.text = self._cell.text.strip()
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None and self._section is not None:
            self.tables[self._section].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "section":
            self._section = None
        elif tag == "a":
            if self._card is not None:
                label = self._card.get("label", "")
                self.cards[label] = (self._card.get("value", ""), self._card["href"])
                self._card = None
            if self._link is not None:
                self.links.append(("".join(self._link[1]).strip(), self._link[0]))
                self._link = None
        elif tag == "span":
            self._span = None
        elif tag == "li":
            self._card_li = False
            if self._li is not None:
                self.errors.append("".join(self._li).strip())
                self._li = None
        elif tag in ("div", "ul") and self._in_errors:
            self._in_errors = False
        elif tag == "h1" and self._h1 is not None:
            self.heading = "".join(self._h1).strip()
            self._h1 = None
        elif tag == "th" and getattr(self, "_group", False):
            self._group = False

    def handle_data(self, data: str) -> None:
        if self._h1 is not None:
            self._h1.append(data)
        if getattr(self, "_group", False) and self._section is not None:
            name, span = self.groups[self._section][-1]
            self.groups[self._section][-1] = (name + data.strip(), span)
        if self._cell is not None:
            self._cell.text += data
        if self._card is not None and self._span is not None:
            self._card[self._span] = self._card.get(self._span, "") + data.strip()
        if self._link is not None:
            self._link[1].append(data)
        if self._li is not None:
            self._li.append(data)


def read(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def column(page: Page, table: str, index: int) -> list[str]:
    return [row[index].text for row in page.tables[table]]
