from reports.render import render


def test_total_and_rows():
    html = render([{"item": "tea", "amount": 2.5}, {"item": "cake", "amount": 4}])
    assert "<td>tea</td><td>2.50</td>" in html
    assert "<th>6.50</th>" in html


def test_item_names_are_escaped():
    assert "&lt;script&gt;" in render([{"item": "<script>", "amount": 1}])
