from clipbranches_widget import demo


def test_demo_runs_and_refining_finds_more_of_the_concept():
    lines = []
    session = demo.run(digit=3, rounds=2, out=lines.append)
    text = "\n".join(lines)
    assert "catalogue: 1797 images" in text
    assert text.count("refine round") == 2 and "SELECT" in text
    assert session.results.kind == "refined" and session.results.count > 60
