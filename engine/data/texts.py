"""The text the character-level language model learns (the `chars` dataset): written for Netlab,
in plain words about how networks learn, so that samples read like something a student has seen.
"""

NETLAB_TEXT = """\
a network learns by making small changes to its weights. it looks at a batch of examples,
makes a guess for each one, and measures how wrong the guesses are. the loss says how wrong.
the gradient says which way each weight should move to make the loss smaller. the learning
rate says how far to move. then the network looks at the next batch and does it again.

if the learning rate is too small, the loss falls so slowly that nothing seems to happen.
if the learning rate is too large, the weights jump past the valley and the loss climbs.
a good rate is found by trying, and a schedule can make it smaller as training goes on.

a layer takes the numbers from the layer below, mixes them with its weights, adds a bias,
and bends the result with an activation. without the bend, many layers would be no better
than one. with it, the network can draw curved lines between the classes it must separate.

deep networks pass the gradient back through every layer. each layer multiplies it again.
when the numbers are a little smaller than one, the gradient fades as it goes back, and the
first layers stop learning. when they are a little larger than one, it grows until the
weights break. good starting weights, careful activations and normalisation keep it steady.

a recurrent network reads a sequence one step at a time. it keeps a hidden state, a short
memory of what it has read so far, and it uses the same weights at every step. to learn,
it is unrolled in time, and the gradient flows back from the last step to the first. over
many steps the gradient can fade, so the network forgets what it read long ago. the long
short term memory keeps a cell state that the gates protect, and the gated recurrent unit
does something similar with fewer weights. both can remember across many more steps.

a language model reads text and guesses the next letter. at first its guesses are no better
than the letter counts: spaces and the letter e come up most. then it learns which letters
follow which, then short words, then the shape of whole sentences. when it writes, it picks
each letter from its guess. a low temperature picks the most likely letters and repeats
itself. a high temperature picks wild letters and writes nonsense. in between, it writes
words that look like the text it read, and sometimes words that were never there at all.

a model that fits its training data perfectly may still fail on new data. it has learned
the examples, not the rule. to see it, keep some data aside and watch the loss on it. when
the training loss falls and the held out loss rises, the model has started to memorise.
more data, smaller models, dropout, weight decay and stopping early all help it generalise.

a convolution slides a small window over an image and looks for the same pattern at every
place. the window has few weights, and they are shared, so the layer learns a pattern once
and finds it anywhere. pooling keeps the strongest answer in each patch and makes the map
smaller. layer by layer, the network sees larger parts of the image: first edges, then
corners and strokes, then whole shapes. this is why a small convolutional network can beat
a large dense one on pictures, with far fewer weights.

the data matters as much as the model. inputs on very different scales make some weights
move too fast and others too slow, so we scale each input to a similar range before
training. shuffled batches give the network a fair sample of the data at every step. a
validation set, never used for training, tells us whether what the model learned holds up.

momentum lets the weights keep some of their last step, so they roll through small bumps
and along long valleys. adaptive methods give each weight its own step size, large where
the gradient is small and steady, small where it is large and noisy. none of them is best
for every problem, and the learning rate still matters most of all.

when a network does not train, look before you guess. is the loss falling at all? are the
gradients the same size in every layer, or do they fade toward the input? are many units
silent, or stuck at the flat ends of their curve? is the validation loss moving away from
the training loss? each question points to a different fix, and the wrong fix can make
things worse. change one thing at a time and watch what happens.

every number on the screen comes from a real network, trained while you watch. change one
setting, train again with the same seed, and compare. that is how you learn what each part
of a network does, and why it does not train when it does not.
"""
