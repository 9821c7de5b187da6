"""The appliance: settings, logging, the `minipacs` command and process supervision."""
