from stenod.cli.main import app

app()
