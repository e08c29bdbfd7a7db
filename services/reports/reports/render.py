"""Render order summaries as HTML."""

from jinja2 import Environment, select_autoescape

_env = Environment(autoescape=select_autoescape(default=True))
_template = _env.from_string(
    "<table>{% for o in orders %}<tr><td>{{ o.item }}</td><td>{{ '%.2f' % o.amount }}</td></tr>"
    "{% endfor %}<tr><th>Total</th><th>{{ '%.2f' % total }}</th></tr></table>"
)


def render(orders: list[dict]) -> str:
    return _template.render(orders=orders, total=sum(o["amount"] for o in orders))
