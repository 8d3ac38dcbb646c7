FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY wire wire
COPY feeder feeder
COPY consumers consumers
COPY simulator simulator
COPY replay replay
COPY polybus polybus
RUN pip install --no-cache-dir .
ENTRYPOINT ["polybus"]
