"""The local development stack, shared by `flywheel up`, the tests, the benchmarks and the demo.

- `ports.py`: free ports, waiting for a listener;
- `brokers.py`: the embedded Kafka-protocol brokers (Tansu, Apache Kafka) on 127.0.0.1;
- `stack.py`: every service's ports and extra environment (`ServiceSpec`);
- `supervisor.py`: planning the stack (commands, ports, environment), handing it to the daemon,
  `up`/`restart`/`down`, the state file, and `wait_ready` for anything started on its own;
- `daemon.py`: the supervisor daemon that owns the processes and restarts what exits.

It starts services as processes by module name and never imports one.
"""
