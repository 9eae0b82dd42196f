"""The classic Keras stacked-LSTM sequence-labelling script, run by rnnkit with only the imports
changed (``rnnkit.models`` / ``rnnkit.layers`` instead of ``keras.models`` / ``keras.layers``).

Task (synthetic, learnable): at every time step, predict which input feature was largest
``delay`` steps earlier (steps before ``delay`` look at step 0). Chance level is
``1 / output_dim``. The inputs are random; the labels need memory of the last ``delay`` steps.

Shapes: ``X_train [samples, timesteps, input_dim]`` float32, ``y_train [samples, timesteps,
output_dim]`` one-hot.

Run: ``python examples/seed_keras.py``
"""
import time

import numpy as np

from rnnkit.models import Sequential
from rnnkit.layers import LSTM, Dense

samples, timesteps, input_dim, output_dim, delay = 1000, 20, 8, 8, 1

rng = np.random.default_rng(0)
np.random.seed(0)  # makes the weight initialisation reproducible
X_train = rng.normal(size=(samples, timesteps, input_dim)).astype(np.float32)
source = np.maximum(np.arange(timesteps) - delay, 0)          # step whose argmax is the label
labels = np.argmax(X_train[:, source, :], axis=-1)            # [samples, timesteps]
y_train = np.eye(output_dim, dtype=np.float32)[labels]        # one-hot [samples, timesteps, output_dim]

start = time.perf_counter()

model = Sequential()
model.add(LSTM(units=64, return_sequences=True, input_shape=(timesteps, input_dim)))
model.add(LSTM(units=32, return_sequences=True))
model.add(Dense(units=output_dim, activation='softmax'))
model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
model.fit(X_train, y_train, epochs=10, batch_size=32)

elapsed = time.perf_counter() - start
loss, accuracy = model.evaluate(X_train, y_train)
print(f"final training accuracy: {accuracy:.3f} (chance {1 / output_dim:.3f}); loss {loss:.4f}; "
      f"model build + fit: {elapsed:.1f} s")
