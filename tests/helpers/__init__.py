"""What the tests share that is not a fixture: paths, databases, servers, policies, organisations,
uploads, the browser, the in-process voice line. Fixtures live in the conftest.py files."""
